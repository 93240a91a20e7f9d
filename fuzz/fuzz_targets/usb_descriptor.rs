#![no_main]
//! HID report descriptors, as read from sysfs for every hidraw node (any USB device can be
//! plugged into a kiosk).
//!
//! Properties: the documented bounds hold for every accepted descriptor (length, top-level
//! collections, report sizes); the FIDO collection, when found, has the CTAPHID usage;
//! an interface passes the CTAPHID report check only with 64-byte reports and no report IDs.

use libfuzzer_sys::fuzz_target;
use passkeyd::transport::usb::descriptor::{
    DescriptorError, FIDO_CTAPHID, MAX_DESCRIPTOR_LEN, MAX_REPORT_BITS, MAX_TOP_LEVEL_COLLECTIONS,
    ReportDescriptor,
};

fuzz_target!(|data: &[u8]| {
    match ReportDescriptor::parse(data) {
        Ok(descriptor) => {
            assert!(!data.is_empty() && data.len() <= MAX_DESCRIPTOR_LEN);
            assert!(descriptor.collections.len() <= MAX_TOP_LEVEL_COLLECTIONS);
            assert!(descriptor.input_bits <= MAX_REPORT_BITS);
            assert!(descriptor.output_bits <= MAX_REPORT_BITS);
            assert_eq!(descriptor.is_fido(), descriptor.fido_collection().is_some());
            if let Some(fido) = descriptor.fido_collection() {
                assert_eq!(fido.usage, Some(FIDO_CTAPHID));
            }
            if descriptor.check_ctaphid_reports().is_ok() {
                assert!(!descriptor.report_ids);
                assert_eq!((descriptor.input_bits, descriptor.output_bits), (512, 512));
            }
            // Parsing is a function of the bytes.
            assert_eq!(ReportDescriptor::parse(data).ok(), Some(descriptor));
        }
        Err(DescriptorError::Empty) => assert!(data.is_empty()),
        Err(DescriptorError::TooLong(len)) => {
            assert_eq!(len, data.len());
            assert!(len > MAX_DESCRIPTOR_LEN);
        }
        Err(error) => {
            assert!(!data.is_empty() && data.len() <= MAX_DESCRIPTOR_LEN);
            let _ = error.to_string();
        }
    }
});
