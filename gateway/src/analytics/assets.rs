//! The dashboard page and its files, compiled into the binary so the
//! admin listener serves them with no network access and no files on disk.
//!
//! Serve each entry of [`ASSETS`] at `/dashboard/<path>` (and `INDEX_HTML`
//! also at `/dashboard`) with its content type. The files hold no data, so
//! they are served without the admin token; the page's data requests carry
//! the login session cookie (see the admin module), never a token in a URL.
//! `INDEX_HTML` has a `<!--logout-->` marker where the admin listener puts
//! a logout button when logins exist.

/// `index.html`: the page.
pub const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
/// `app.js`: fetches history, follows the SSE feed, draws the charts.
pub const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
/// `app.css`: layout and colours.
pub const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");
/// `uPlot.iife.min.js`: uPlot 1.6.32 (MIT), vendored from npm.
pub const UPLOT_JS: &str = include_str!("../../assets/dashboard/uPlot.iife.min.js");
/// `uPlot.min.css`: uPlot's stylesheet.
pub const UPLOT_CSS: &str = include_str!("../../assets/dashboard/uPlot.min.css");
/// `uPlot.LICENSE`: uPlot's MIT licence text, served beside it.
pub const UPLOT_LICENSE: &str = include_str!("../../assets/dashboard/uPlot.LICENSE");

/// Every file: path under `/dashboard/`, content type, body.
pub const ASSETS: [(&str, &str, &str); 6] = [
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("app.css", "text/css; charset=utf-8", APP_CSS),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", UPLOT_JS),
    ("uPlot.min.css", "text/css; charset=utf-8", UPLOT_CSS),
    ("uPlot.LICENSE", "text/plain; charset=utf-8", UPLOT_LICENSE),
];

/// The asset at `path` (relative to `/dashboard/`; empty means the page):
/// content type and body.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ct, body)| (*ct, *body))
}
