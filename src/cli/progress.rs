//! Progress bars for pulls and imports: one indicatif bar per layer.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use skiff_runtime::image::{Digest, LayerEvent, Progress};

#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_prefix(digest.short().to_string());
                bar
            })
            .clone()
    }

    pub fn clear(&self) {
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn layer(&self, digest: &Digest, size: u64, event: LayerEvent) {
        let bar = self.bar(digest, size);
        match event {
            LayerEvent::Cached => bar.finish_with_message("cached"),
            LayerEvent::Fetching => bar.set_message("fetching"),
            LayerEvent::Bytes(n) => bar.inc(n),
            LayerEvent::Unpacking => bar.set_message("unpacking"),
            LayerEvent::Done => bar.finish_with_message("done"),
        }
    }
}
