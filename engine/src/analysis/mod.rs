//! The study's analyses as pure functions: arrays and labels in, numbers out,
//! no I/O. Named after the paper's analyses (see `../shared/PAPER.md`).
