//! NFC security keys through PC/SC.
