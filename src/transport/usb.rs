//! USB HID security keys (hidraw).
