//! Live progress on stderr while a load runs: an indicatif bar on a
//! terminal, one plain line per second otherwise (CI logs, pipes). stdout
//! stays clean for `--json`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::load::Ctx;
use crate::report::Recorder;

/// A running progress display.
pub(crate) struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts the display; the bar counts messages when `total_messages`
    /// is known, elapsed time otherwise.
    pub(crate) fn start(ctx: Arc<Ctx>, total_messages: Option<u64>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let run_ms = (ctx.end_at - ctx.epoch).as_millis() as u64;
        let bar = tty.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_messages.unwrap_or(run_ms)), ProgressDrawTarget::stderr());
            let template = "{spinner} [{elapsed_precise}] {bar:30} {msg}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let tick = if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            };
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(tick).await;
                let rec = &ctx.rec;
                let received = Recorder::get(&rec.received);
                let now = Instant::now();
                let rate = (received - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, received);
                let line = format!(
                    "sessions {} sent {} recv {} {:.0} msg/s mismatched {} errors {}",
                    Recorder::get(&rec.sessions_active),
                    Recorder::get(&rec.sent),
                    received,
                    rate,
                    Recorder::get(&rec.mismatched) + Recorder::get(&rec.out_of_order),
                    rec.errors_total(),
                );
                match &shown {
                    Some(bar) => {
                        let position = match total_messages {
                            Some(_) => received,
                            None => ctx.epoch.elapsed().as_millis() as u64,
                        };
                        bar.set_position(position);
                        bar.set_message(line);
                    }
                    None => eprintln!("[{:>5.1}s] {line}", ctx.epoch.elapsed().as_secs_f64()),
                }
            }
        });
        Self { task, bar }
    }

    /// Stops the display.
    pub(crate) fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
