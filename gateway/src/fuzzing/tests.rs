//! The committed seeds and crash reproducers of the fuzz targets
//! (`gateway/fuzz/seeds/<target>/`), run through the entry points.

use std::path::Path;

fn each_seed(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        run(&bytes);
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}

#[test]
fn request_head_seeds_hold_the_invariants() {
    each_seed("request_head", super::request_head);
}

#[test]
fn ws_lane_seeds_hold_the_invariants() {
    each_seed("ws_lane", super::ws_lane);
}
