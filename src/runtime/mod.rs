//! Exercises at run time: the actor of one exercise (`exercise`), the
//! journal that stores before it announces (`journal`), what browsers
//! follow (`live`), the precise wake-ups (`timer`), the registry of every
//! exercise of `serve` (`service`) and the foreground `run` (`run`).

pub mod exercise;
pub mod journal;
pub mod live;
pub mod run;
pub mod service;
pub mod timer;
