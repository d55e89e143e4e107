//! The three windows of one scope — 1 h at 1 s, 24 h at 1 min, 7 d at 1 h —
//! as bounded ring buffers, and the rollup from each into the next.
//!
//! A second is stored as soon as its tick arrives (so the live feed shows
//! it) but is rolled up only when a later second arrives, because a second
//! tick may still land in it. A minute is rolled into its hour when the
//! first second of a later minute is rolled up, and so on: each coarser
//! point is final about one finer step after its interval ends.
//!
//! Beside the points, the last 60 minutes and the 168 hours keep their
//! merged bucket counts, so percentiles over any whole-minute range of the
//! last hour ("acquire wait p95 over 10 min") or any whole-hour range of
//! the week come from merged buckets, not from averaged percentiles.

use std::collections::VecDeque;

use super::hist::Hist;
use super::point::{Acc, Point};

/// Which stored window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last hour at 1 s.
    Hour,
    /// The last 24 hours at 1 min.
    Day,
    /// The last 7 days at 1 h.
    Week,
}

impl Window {
    /// Seconds per point.
    pub fn step_secs(self) -> u32 {
        match self {
            Self::Hour => 1,
            Self::Day => 60,
            Self::Week => 3600,
        }
    }

    /// Points kept.
    pub fn points(self) -> usize {
        match self {
            Self::Hour => 3600,
            Self::Day => 1440,
            Self::Week => 168,
        }
    }

    /// `"1h"`, `"24h"` or `"7d"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    /// Parses `1h`, `24h` or `7d`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1h" => Some(Self::Hour),
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            _ => None,
        }
    }
}

/// A FIFO of at most `cap` items that drops the oldest when full.
///
/// Its storage is allocated and written once, when the ring is made, so a
/// scope's memory is all resident from its first second and stays flat:
/// a soak sees no growth while the windows fill (an hour, a day, a week),
/// and the allocator never moves a ring that doubles as it grows. The cost
/// is the bound itself, `cap` items, paid up front (about 1.15 MiB per
/// scope, `memory_bound`).
#[derive(Clone, Debug)]
pub(crate) struct Ring<T> {
    buf: VecDeque<T>,
    cap: usize,
}

impl<T: Clone + Default> Ring<T> {
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let mut buf = VecDeque::with_capacity(cap);
        // Touch every page now (then forget the items, keeping the pages).
        buf.resize(cap, T::default());
        buf.clear();
        Self { buf, cap }
    }
}

impl<T> Ring<T> {
    pub(crate) fn push(&mut self, v: T) {
        if self.buf.len() >= self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(v);
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.buf.iter()
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.buf.back()
    }

    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        self.buf.back_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Items of storage allocated (for the memory-bound test).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl Ring<Point> {
    /// The point starting at `t`, if stored (points are in time order).
    pub(crate) fn at(&self, t: u32) -> Option<&Point> {
        let i = self.buf.binary_search_by_key(&t, |p| p.t).ok()?;
        self.buf.get(i)
    }
}

/// The most recent `n` items, oldest first.
pub(crate) fn tail<T>(r: &Ring<T>, n: usize) -> impl Iterator<Item = &T> {
    r.iter().skip(r.len().saturating_sub(n))
}

/// The windows of one scope.
#[derive(Clone, Debug)]
pub(crate) struct ScopeSeries {
    /// The newest second, still open to a second tick in the same second.
    open: Option<Acc>,
    /// The minute being built from closed seconds.
    minute: Option<Acc>,
    /// The hour being built from closed minutes.
    hour: Option<Acc>,
    pub(crate) secs: Ring<Point>,
    pub(crate) mins: Ring<Point>,
    pub(crate) hours: Ring<Point>,
    pub(crate) min_hists: Ring<(u32, [Hist; 4])>,
    pub(crate) hour_hists: Ring<(u32, [Hist; 4])>,
}

/// Minutes of bucket counts kept for range percentiles.
pub(crate) const MINUTE_HISTS: usize = 60;

impl Default for ScopeSeries {
    fn default() -> Self {
        Self {
            open: None,
            minute: None,
            hour: None,
            secs: Ring::new(Window::Hour.points()),
            mins: Ring::new(Window::Day.points()),
            hours: Ring::new(Window::Week.points()),
            min_hists: Ring::new(MINUTE_HISTS),
            hour_hists: Ring::new(Window::Week.points()),
        }
    }
}

impl ScopeSeries {
    /// Files one second. Returns false (and stores nothing) for a second
    /// older than the newest one: the windows only move forward.
    pub(crate) fn push(&mut self, s: Acc) -> bool {
        let t = s.point.t;
        match self.open.as_mut() {
            Some(open) if open.point.t == t => {
                open.merge_same_second(&s);
                if let Some(last) = self.secs.last_mut() {
                    *last = open.point;
                }
                return true;
            }
            Some(open) if t < open.point.t => return false,
            _ => {}
        }
        if let Some(prev) = self.open.take() {
            self.close_second(prev);
        }
        self.secs.push(s.point);
        self.open = Some(s);
        true
    }

    /// The window's points, oldest first.
    pub(crate) fn window(&self, w: Window) -> &Ring<Point> {
        match w {
            Window::Hour => &self.secs,
            Window::Day => &self.mins,
            Window::Week => &self.hours,
        }
    }

    /// The newest second.
    pub(crate) fn latest(&self) -> Option<&Point> {
        self.secs.last()
    }

    /// Merged bucket counts of the last `n` closed minutes (n ≤ 60), per
    /// latency series, and how many minutes there were.
    pub(crate) fn recent_minutes_hists(&self, n: usize) -> ([Hist; 4], usize) {
        let mut out = [Hist::default(); 4];
        let mut k = 0;
        for (_, hs) in tail(&self.min_hists, n) {
            for (o, h) in out.iter_mut().zip(hs) {
                o.merge(h);
            }
            k += 1;
        }
        (out, k)
    }

    /// Rolls a finished second into its minute, closing that minute first
    /// when this second starts a later one.
    fn close_second(&mut self, s: Acc) {
        let m = s.point.t - s.point.t % 60;
        if self.minute.as_ref().is_some_and(|a| a.point.t != m)
            && let Some(done) = self.minute.take()
        {
            self.close_minute(done);
        }
        self.minute.get_or_insert_with(|| Acc::empty(m)).add(&s);
    }

    fn close_minute(&mut self, m: Acc) {
        self.mins.push(m.point);
        self.min_hists.push((m.point.t, m.hists));
        let h = m.point.t - m.point.t % 3600;
        if self.hour.as_ref().is_some_and(|a| a.point.t != h)
            && let Some(done) = self.hour.take()
        {
            self.hours.push(done.point);
            self.hour_hists.push((done.point.t, done.hists));
        }
        self.hour.get_or_insert_with(|| Acc::empty(h)).add(&m);
    }

    /// Bytes of storage allocated by this scope's windows.
    pub(crate) fn allocated_bytes(&self) -> usize {
        let p = std::mem::size_of::<Point>();
        let h = std::mem::size_of::<(u32, [Hist; 4])>();
        (self.secs.capacity() + self.mins.capacity() + self.hours.capacity()) * p
            + (self.min_hists.capacity() + self.hour_hists.capacity()) * h
            + std::mem::size_of::<Self>()
    }

    /// The most bytes one scope's windows can allocate.
    pub(crate) fn max_bytes() -> usize {
        let p = std::mem::size_of::<Point>();
        let h = std::mem::size_of::<(u32, [Hist; 4])>();
        (Window::Hour.points() + Window::Day.points() + Window::Week.points()) * p
            + (MINUTE_HISTS + Window::Week.points()) * h
            + std::mem::size_of::<Self>()
    }
}
