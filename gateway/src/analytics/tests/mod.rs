//! Tests of the analytics module, driven by synthetic ticks.

mod detect;
mod feed;
mod forecast;
mod recommend;
mod support;
mod task;
mod webhook;
mod windows;
