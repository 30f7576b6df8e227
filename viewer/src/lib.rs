//! The bundle format and charts shared by the engine and the browser viewer.
