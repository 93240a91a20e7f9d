//! HID report descriptors: just enough of the item stream to tell a CTAPHID interface from
//! the rest.
//!
//! A report descriptor is a stream of items (HID 1.11 §6.2.2): short items are a prefix byte
//! (`bSize` in bits 0–1 with 3 meaning four bytes, `bType` in bits 2–3, `bTag` in bits 4–7)
//! followed by 0, 1, 2 or 4 data bytes; long items (§6.2.2.3) start with `0xFE`, a data length
//! and a tag, and carry nothing a host parser uses, so they are skipped. A FIDO authenticator
//! declares a top-level collection with Usage Page `0xF1D0` and Usage `0x01` (CTAP 2.2
//! §11.2.8.2, HID Usage Tables "FIDO Alliance" page).
//!
//! The parser follows the kernel's `hid_open_report` where the kernel is strict (truncated
//! items, unbalanced collections, report sizes and counts out of range, report ID 0) so that a
//! descriptor accepted here is one the kernel accepted too, and skips what the kernel skips
//! (reserved item types and tags). It is bounded: the input is at most
//! [`MAX_DESCRIPTOR_LEN`] bytes, nesting, the global-item stack and the number of top-level
//! collections have fixed limits, every length is checked arithmetic, and nothing panics.

/// Largest report descriptor accepted: the kernel's `HID_MAX_DESCRIPTOR_SIZE`, which is also
/// the size of the sysfs `report_descriptor` attribute.
pub const MAX_DESCRIPTOR_LEN: usize = 4096;

/// Deepest collection nesting accepted. Real descriptors nest two or three levels.
pub const MAX_COLLECTION_DEPTH: usize = 16;

/// Deepest Push (global-item stack) accepted; the kernel's `HID_GLOBAL_STACK_SIZE` is 4.
pub const MAX_GLOBAL_STACK: usize = 4;

/// Most top-level collections kept. Composite interfaces declare a handful.
pub const MAX_TOP_LEVEL_COLLECTIONS: usize = 32;

/// Largest Report Size (bits per field) accepted, as in the kernel.
pub const MAX_REPORT_SIZE: u32 = 256;

/// Largest Report Count accepted: the kernel's `HID_MAX_USAGES`.
pub const MAX_REPORT_COUNT: u32 = 12288;

/// Largest total size of one report direction, in bits: the kernel's `HID_MAX_BUFFER_SIZE`
/// (16 KiB) in bits.
pub const MAX_REPORT_BITS: u32 = 16384 * 8;

/// The FIDO Alliance usage page (CTAP 2.2 §11.2.8.2).
pub const FIDO_USAGE_PAGE: u16 = 0xF1D0;

/// The CTAPHID usage on the FIDO page (CTAP 2.2 §11.2.8.2).
pub const FIDO_USAGE_CTAPHID: u16 = 0x01;

/// Collection type "Application" (HID 1.11 §6.2.2.6).
pub const COLLECTION_APPLICATION: u8 = 0x01;

/// Prefix byte of a long item (HID 1.11 §6.2.2.3).
const LONG_ITEM_PREFIX: u8 = 0xFE;

// Item types (HID 1.11 §6.2.2.2).
const TYPE_MAIN: u8 = 0;
const TYPE_GLOBAL: u8 = 1;
const TYPE_LOCAL: u8 = 2;

// Main item tags (HID 1.11 §6.2.2.4).
const MAIN_INPUT: u8 = 0x8;
const MAIN_OUTPUT: u8 = 0x9;
const MAIN_COLLECTION: u8 = 0xA;
const MAIN_FEATURE: u8 = 0xB;
const MAIN_END_COLLECTION: u8 = 0xC;

// Global item tags (HID 1.11 §6.2.2.7).
const GLOBAL_USAGE_PAGE: u8 = 0x0;
const GLOBAL_REPORT_SIZE: u8 = 0x7;
const GLOBAL_REPORT_ID: u8 = 0x8;
const GLOBAL_REPORT_COUNT: u8 = 0x9;
const GLOBAL_PUSH: u8 = 0xA;
const GLOBAL_POP: u8 = 0xB;

// Local item tags (HID 1.11 §6.2.2.8).
const LOCAL_USAGE: u8 = 0x0;

/// A usage: page and id (HID 1.11 §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Usage page.
    pub page: u16,
    /// Usage id on that page.
    pub id: u16,
}

/// The CTAPHID usage (CTAP 2.2 §11.2.8.2).
pub const FIDO_CTAPHID: Usage = Usage {
    page: FIDO_USAGE_PAGE,
    id: FIDO_USAGE_CTAPHID,
};

/// One top-level collection of a report descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopLevelCollection {
    /// Its usage, or `None` when no Usage item preceded the Collection item.
    pub usage: Option<Usage>,
    /// Collection type (`0x01` Application, HID 1.11 §6.2.2.6).
    pub kind: u8,
}

/// What a report descriptor declares, as far as device discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportDescriptor {
    /// Top-level collections in order.
    pub collections: Vec<TopLevelCollection>,
    /// Whether any Report ID item occurs: then every report on the wire (and every hidraw
    /// read and write) carries a report-ID byte.
    pub report_ids: bool,
    /// Total size of the Input items, in bits: without report IDs, the one input report.
    pub input_bits: u32,
    /// Total size of the Output items, in bits: without report IDs, the one output report.
    pub output_bits: u32,
}

/// Why a report descriptor was refused. Offsets are of the offending item's prefix byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The descriptor is empty.
    #[error("empty report descriptor")]
    Empty,
    /// The descriptor is longer than [`MAX_DESCRIPTOR_LEN`].
    #[error("report descriptor of {0} bytes is longer than {MAX_DESCRIPTOR_LEN}")]
    TooLong(usize),
    /// An item's data runs past the end.
    #[error("item at offset {offset} runs past the end")]
    Truncated {
        /// Offset of the item.
        offset: usize,
    },
    /// End Collection without an open collection.
    #[error("End Collection at offset {offset} closes nothing")]
    UnbalancedEndCollection {
        /// Offset of the item.
        offset: usize,
    },
    /// The descriptor ends inside a collection.
    #[error("report descriptor ends inside {depth} open collection(s)")]
    UnclosedCollection {
        /// How many collections are open.
        depth: usize,
    },
    /// Collections nest deeper than [`MAX_COLLECTION_DEPTH`].
    #[error("collection at offset {offset} nests deeper than {MAX_COLLECTION_DEPTH}")]
    TooDeep {
        /// Offset of the item.
        offset: usize,
    },
    /// More than [`MAX_TOP_LEVEL_COLLECTIONS`] top-level collections.
    #[error("more than {MAX_TOP_LEVEL_COLLECTIONS} top-level collections")]
    TooManyCollections,
    /// Push beyond [`MAX_GLOBAL_STACK`].
    #[error("Push at offset {offset} overflows the global item stack")]
    GlobalStackOverflow {
        /// Offset of the item.
        offset: usize,
    },
    /// Pop on an empty global item stack.
    #[error("Pop at offset {offset} on an empty global item stack")]
    GlobalStackUnderflow {
        /// Offset of the item.
        offset: usize,
    },
    /// Usage Page with a value above `0xFFFF`.
    #[error("Usage Page at offset {offset} is wider than 16 bits")]
    UsagePageOutOfRange {
        /// Offset of the item.
        offset: usize,
    },
    /// Report ID 0, which HID reserves (HID 1.11 §6.2.2.7).
    #[error("Report ID 0 at offset {offset}")]
    ZeroReportId {
        /// Offset of the item.
        offset: usize,
    },
    /// Report ID above 255.
    #[error("Report ID at offset {offset} is wider than 8 bits")]
    ReportIdOutOfRange {
        /// Offset of the item.
        offset: usize,
    },
    /// Report Size above [`MAX_REPORT_SIZE`].
    #[error("Report Size at offset {offset} is above {MAX_REPORT_SIZE} bits")]
    ReportSizeOutOfRange {
        /// Offset of the item.
        offset: usize,
    },
    /// Report Count above [`MAX_REPORT_COUNT`].
    #[error("Report Count at offset {offset} is above {MAX_REPORT_COUNT}")]
    ReportCountOutOfRange {
        /// Offset of the item.
        offset: usize,
    },
    /// The Input or Output items add up to more than [`MAX_REPORT_BITS`].
    #[error("reports declared up to offset {offset} are longer than {MAX_REPORT_BITS} bits")]
    ReportTooLong {
        /// Offset of the item.
        offset: usize,
    },
}

/// Why a FIDO collection cannot carry CTAPHID reports as this transport moves them (64-byte
/// reports without a report ID, CTAP 2.2 §11.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedReports {
    /// The descriptor declares report IDs, so reports would carry an ID byte.
    #[error("the interface uses numbered reports")]
    ReportIds,
    /// The input report is not 64 bytes.
    #[error("input report of {0} bits, not 512")]
    InputSize(u32),
    /// The output report is not 64 bytes.
    #[error("output report of {0} bits, not 512")]
    OutputSize(u32),
}

/// Global items that matter here (HID 1.11 §6.2.2.7); Push and Pop save and restore them.
#[derive(Clone, Copy, Default)]
struct Globals {
    usage_page: u16,
    report_size: u32,
    report_count: u32,
}

/// The first Usage local item since the last main item, raw: its data and whether it was a
/// four-byte extended usage that carries its own page (HID 1.11 §6.2.2.8).
#[derive(Clone, Copy)]
struct PendingUsage {
    data: u32,
    extended: bool,
}

impl ReportDescriptor {
    /// Parses a report descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.is_empty() {
            return Err(DescriptorError::Empty);
        }
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLong(bytes.len()));
        }
        let mut out = Self {
            collections: Vec::new(),
            report_ids: false,
            input_bits: 0,
            output_bits: 0,
        };
        let mut globals = Globals::default();
        let mut stack = [Globals::default(); MAX_GLOBAL_STACK];
        let mut stack_len = 0usize;
        let mut usage: Option<PendingUsage> = None;
        let mut depth = 0usize;
        let mut offset = 0usize;

        while let Some(&prefix) = bytes.get(offset) {
            if prefix == LONG_ITEM_PREFIX {
                // Long item: prefix, bDataSize, bLongItemTag, data. No tag is defined.
                let size = *bytes
                    .get(offset + 1)
                    .ok_or(DescriptorError::Truncated { offset })?;
                let end = offset + 3 + usize::from(size);
                if end > bytes.len() {
                    return Err(DescriptorError::Truncated { offset });
                }
                offset = end;
                continue;
            }
            let size = match prefix & 0x03 {
                3 => 4,
                n => usize::from(n),
            };
            let data_bytes = bytes
                .get(offset + 1..offset + 1 + size)
                .ok_or(DescriptorError::Truncated { offset })?;
            let data = data_bytes
                .iter()
                .rev()
                .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            let kind = (prefix >> 2) & 0x03;
            let tag = prefix >> 4;

            match kind {
                TYPE_MAIN => {
                    match tag {
                        MAIN_COLLECTION => {
                            if depth == 0 {
                                if out.collections.len() == MAX_TOP_LEVEL_COLLECTIONS {
                                    return Err(DescriptorError::TooManyCollections);
                                }
                                out.collections.push(TopLevelCollection {
                                    usage: usage.map(|u| resolve(u, globals.usage_page)),
                                    // Collection types are one byte; wider data is the
                                    // kernel's reading too (it keeps the low byte).
                                    kind: (data & 0xFF) as u8,
                                });
                            }
                            if depth == MAX_COLLECTION_DEPTH {
                                return Err(DescriptorError::TooDeep { offset });
                            }
                            depth += 1;
                        }
                        MAIN_END_COLLECTION => {
                            depth = depth
                                .checked_sub(1)
                                .ok_or(DescriptorError::UnbalancedEndCollection { offset })?;
                        }
                        MAIN_INPUT => {
                            out.input_bits = add_field(out.input_bits, globals, offset)?;
                        }
                        MAIN_OUTPUT => {
                            out.output_bits = add_field(out.output_bits, globals, offset)?;
                        }
                        // Feature reports go through ioctls, never through read and write.
                        MAIN_FEATURE => {}
                        // Reserved main tags: skipped, as the kernel does.
                        _ => {}
                    }
                    // Local items apply to the next main item only (HID 1.11 §6.2.2.8).
                    usage = None;
                }
                TYPE_GLOBAL => match tag {
                    GLOBAL_USAGE_PAGE => {
                        globals.usage_page = u16::try_from(data)
                            .map_err(|_| DescriptorError::UsagePageOutOfRange { offset })?;
                    }
                    GLOBAL_REPORT_SIZE => {
                        if data > MAX_REPORT_SIZE {
                            return Err(DescriptorError::ReportSizeOutOfRange { offset });
                        }
                        globals.report_size = data;
                    }
                    GLOBAL_REPORT_COUNT => {
                        if data > MAX_REPORT_COUNT {
                            return Err(DescriptorError::ReportCountOutOfRange { offset });
                        }
                        globals.report_count = data;
                    }
                    GLOBAL_REPORT_ID => {
                        if data == 0 {
                            return Err(DescriptorError::ZeroReportId { offset });
                        }
                        if data > 0xFF {
                            return Err(DescriptorError::ReportIdOutOfRange { offset });
                        }
                        out.report_ids = true;
                    }
                    GLOBAL_PUSH => {
                        let slot = stack
                            .get_mut(stack_len)
                            .ok_or(DescriptorError::GlobalStackOverflow { offset })?;
                        *slot = globals;
                        stack_len += 1;
                    }
                    GLOBAL_POP => {
                        stack_len = stack_len
                            .checked_sub(1)
                            .ok_or(DescriptorError::GlobalStackUnderflow { offset })?;
                        // INVARIANT: stack_len < MAX_GLOBAL_STACK after the decrement.
                        globals = stack.get(stack_len).copied().unwrap_or_default();
                    }
                    // Logical/physical ranges, units: nothing discovery needs.
                    _ => {}
                },
                TYPE_LOCAL if tag == LOCAL_USAGE && usage.is_none() => {
                    usage = Some(PendingUsage {
                        data,
                        extended: size == 4,
                    });
                }
                // Further usages, usage ranges, designators, strings, delimiters: nothing
                // discovery needs. The reserved item type: skipped, as the kernel does.
                _ => {}
            }
            offset += 1 + size;
        }

        if depth != 0 {
            return Err(DescriptorError::UnclosedCollection { depth });
        }
        Ok(out)
    }

    /// The first top-level collection with the CTAPHID usage, if any.
    pub fn fido_collection(&self) -> Option<&TopLevelCollection> {
        self.collections
            .iter()
            .find(|c| c.usage == Some(FIDO_CTAPHID))
    }

    /// Whether some top-level collection declares the CTAPHID usage.
    pub fn is_fido(&self) -> bool {
        self.fido_collection().is_some()
    }

    /// Checks that reads and writes on this interface are exactly the 64-byte CTAPHID
    /// reports, without a report ID (CTAP 2.2 §11.2.4).
    pub fn check_ctaphid_reports(&self) -> Result<(), UnsupportedReports> {
        const BITS: u32 = 64 * 8;
        if self.report_ids {
            return Err(UnsupportedReports::ReportIds);
        }
        if self.input_bits != BITS {
            return Err(UnsupportedReports::InputSize(self.input_bits));
        }
        if self.output_bits != BITS {
            return Err(UnsupportedReports::OutputSize(self.output_bits));
        }
        Ok(())
    }
}

/// A Usage of one or two bytes takes the Usage Page current at the main item; a four-byte one
/// carries its page in the high half (HID 1.11 §6.2.2.8).
fn resolve(usage: PendingUsage, page: u16) -> Usage {
    if usage.extended {
        Usage {
            page: (usage.data >> 16) as u16,
            id: (usage.data & 0xFFFF) as u16,
        }
    } else {
        Usage {
            page,
            // One- and two-byte data is at most 0xFFFF.
            id: (usage.data & 0xFFFF) as u16,
        }
    }
}

/// Adds one Input or Output item (Report Size × Report Count bits) to a running total.
fn add_field(total: u32, globals: Globals, offset: usize) -> Result<u32, DescriptorError> {
    globals
        .report_size
        .checked_mul(globals.report_count)
        .and_then(|bits| total.checked_add(bits))
        .filter(|&bits| bits <= MAX_REPORT_BITS)
        .ok_or(DescriptorError::ReportTooLong { offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The CTAPHID interface descriptor of CTAP 2.2 §11.2.8.2 as keys ship it: usage page
    /// F1D0, usage 01, an application collection with a 64-byte input report (usage 20) and a
    /// 64-byte output report (usage 21).
    const FIDO: &[u8] = &[
        0x06, 0xD0, 0xF1, // Usage Page (FIDO Alliance)
        0x09, 0x01, // Usage (CTAPHID)
        0xA1, 0x01, // Collection (Application)
        0x09, 0x20, //   Usage (Input Report Data)
        0x15, 0x00, //   Logical Minimum (0)
        0x26, 0xFF, 0x00, //   Logical Maximum (255)
        0x75, 0x08, //   Report Size (8)
        0x95, 0x40, //   Report Count (64)
        0x81, 0x02, //   Input (Data, Var, Abs)
        0x09, 0x21, //   Usage (Output Report Data)
        0x15, 0x00, //   Logical Minimum (0)
        0x26, 0xFF, 0x00, //   Logical Maximum (255)
        0x75, 0x08, //   Report Size (8)
        0x95, 0x40, //   Report Count (64)
        0x91, 0x02, //   Output (Data, Var, Abs)
        0xC0, // End Collection
    ];

    /// A boot keyboard (HID 1.11 Appendix B.1 layout): not FIDO.
    const KEYBOARD: &[u8] = &[
        0x05, 0x01, // Usage Page (Generic Desktop)
        0x09, 0x06, // Usage (Keyboard)
        0xA1, 0x01, // Collection (Application)
        0x05, 0x07, //   Usage Page (Keyboard/Keypad)
        0x19, 0xE0, //   Usage Minimum (0xE0)
        0x29, 0xE7, //   Usage Maximum (0xE7)
        0x15, 0x00, //   Logical Minimum (0)
        0x25, 0x01, //   Logical Maximum (1)
        0x75, 0x01, //   Report Size (1)
        0x95, 0x08, //   Report Count (8)
        0x81, 0x02, //   Input (Data, Var, Abs): modifiers
        0x95, 0x01, //   Report Count (1)
        0x75, 0x08, //   Report Size (8)
        0x81, 0x01, //   Input (Const): reserved byte
        0x95, 0x05, //   Report Count (5)
        0x75, 0x01, //   Report Size (1)
        0x05, 0x08, //   Usage Page (LEDs)
        0x19, 0x01, //   Usage Minimum (1)
        0x29, 0x05, //   Usage Maximum (5)
        0x91, 0x02, //   Output (Data, Var, Abs): LEDs
        0x95, 0x01, //   Report Count (1)
        0x75, 0x03, //   Report Size (3)
        0x91, 0x01, //   Output (Const): padding
        0x95, 0x06, //   Report Count (6)
        0x75, 0x08, //   Report Size (8)
        0x15, 0x00, //   Logical Minimum (0)
        0x25, 0x65, //   Logical Maximum (101)
        0x05, 0x07, //   Usage Page (Keyboard/Keypad)
        0x19, 0x00, //   Usage Minimum (0)
        0x29, 0x65, //   Usage Maximum (101)
        0x81, 0x00, //   Input (Data, Array): key codes
        0xC0, // End Collection
    ];

    /// One interface with two top-level collections and numbered reports, as composite
    /// OTP+FIDO firmwares could declare: a keyboard (report 1) and the FIDO collection
    /// (report 2).
    const COMPOSITE: &[u8] = &[
        0x05, 0x01, // Usage Page (Generic Desktop)
        0x09, 0x06, // Usage (Keyboard)
        0xA1, 0x01, // Collection (Application)
        0x85, 0x01, //   Report ID (1)
        0x05, 0x07, //   Usage Page (Keyboard/Keypad)
        0x19, 0x00, //   Usage Minimum (0)
        0x29, 0x65, //   Usage Maximum (101)
        0x75, 0x08, //   Report Size (8)
        0x95, 0x08, //   Report Count (8)
        0x81, 0x00, //   Input (Data, Array)
        0xC0, // End Collection
        0x06, 0xD0, 0xF1, // Usage Page (FIDO Alliance)
        0x09, 0x01, // Usage (CTAPHID)
        0xA1, 0x01, // Collection (Application)
        0x85, 0x02, //   Report ID (2)
        0x09, 0x20, //   Usage (Input Report Data)
        0x75, 0x08, //   Report Size (8)
        0x95, 0x40, //   Report Count (64)
        0x81, 0x02, //   Input (Data, Var, Abs)
        0x09, 0x21, //   Usage (Output Report Data)
        0x91, 0x02, //   Output (Data, Var, Abs)
        0xC0, // End Collection
    ];

    #[test]
    fn fido_descriptor_is_fido_with_64_byte_reports() {
        let d = ReportDescriptor::parse(FIDO).unwrap();
        assert_eq!(
            d.collections,
            vec![TopLevelCollection {
                usage: Some(Usage {
                    page: 0xF1D0,
                    id: 0x01
                }),
                kind: COLLECTION_APPLICATION,
            }]
        );
        assert!(!d.report_ids);
        assert_eq!(d.input_bits, 512);
        assert_eq!(d.output_bits, 512);
        assert!(d.is_fido());
        assert_eq!(d.check_ctaphid_reports(), Ok(()));
    }

    #[test]
    fn keyboard_is_not_fido() {
        let d = ReportDescriptor::parse(KEYBOARD).unwrap();
        assert_eq!(
            d.collections,
            vec![TopLevelCollection {
                usage: Some(Usage {
                    page: 0x01,
                    id: 0x06
                }),
                kind: COLLECTION_APPLICATION,
            }]
        );
        // 8 modifier bits + 8 reserved + 6 key bytes; 5 LED bits + 3 padding.
        assert_eq!(d.input_bits, 64);
        assert_eq!(d.output_bits, 8);
        assert!(!d.is_fido());
    }

    #[test]
    fn composite_finds_fido_second_but_numbered_reports_are_unsupported() {
        let d = ReportDescriptor::parse(COMPOSITE).unwrap();
        let usages: Vec<_> = d.collections.iter().map(|c| c.usage).collect();
        assert_eq!(
            usages,
            vec![
                Some(Usage {
                    page: 0x01,
                    id: 0x06
                }),
                Some(FIDO_CTAPHID)
            ]
        );
        assert!(d.report_ids);
        assert_eq!(d.fido_collection(), d.collections.get(1));
        assert_eq!(
            d.check_ctaphid_reports(),
            Err(UnsupportedReports::ReportIds)
        );
    }

    #[test]
    fn two_collections_without_report_ids_make_one_oversized_report() {
        // A vendor collection with a 64-byte input report, then the FIDO collection: without
        // report IDs the device has one input report of 128 bytes.
        let mut d = vec![
            0x06, 0x00, 0xFF, 0x09, 0x01, 0xA1, 0x01, 0x75, 0x08, 0x95, 0x40, 0x81, 0x02, 0xC0,
        ];
        d.extend_from_slice(FIDO);
        let d = ReportDescriptor::parse(&d).unwrap();
        assert!(d.is_fido());
        assert_eq!(d.input_bits, 1024);
        assert_eq!(
            d.check_ctaphid_reports(),
            Err(UnsupportedReports::InputSize(1024))
        );
    }

    #[test]
    fn fido_usage_only_counts_at_top_level() {
        // A vendor application collection holding a nested FIDO collection.
        let d = [
            0x06, 0x00, 0xFF, 0x09, 0x01, 0xA1, 0x01, // vendor application
            0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x02, // nested FIDO logical collection
            0xC0, 0xC0,
        ];
        let d = ReportDescriptor::parse(&d).unwrap();
        assert_eq!(
            d.collections,
            vec![TopLevelCollection {
                usage: Some(Usage {
                    page: 0xFF00,
                    id: 0x01
                }),
                kind: COLLECTION_APPLICATION,
            }]
        );
        assert!(!d.is_fido());
    }

    #[test]
    fn usage_page_applies_at_the_main_item() {
        // Usage before Usage Page: the page current at the Collection item counts.
        let d = ReportDescriptor::parse(&[0x09, 0x01, 0x06, 0xD0, 0xF1, 0xA1, 0x01, 0xC0]).unwrap();
        assert!(d.is_fido());
    }

    #[test]
    fn extended_usage_carries_its_page() {
        // Usage (4 bytes) F1D0:0001 under Generic Desktop.
        let d = [0x05, 0x01, 0x0B, 0x01, 0x00, 0xD0, 0xF1, 0xA1, 0x01, 0xC0];
        let d = ReportDescriptor::parse(&d).unwrap();
        assert_eq!(d.collections[0].usage, Some(FIDO_CTAPHID));
    }

    #[test]
    fn first_usage_names_the_collection_and_locals_reset_after_main_items() {
        // Two usages before the collection: the first names it.
        let d =
            ReportDescriptor::parse(&[0x06, 0xD0, 0xF1, 0x09, 0x01, 0x09, 0x02, 0xA1, 0x01, 0xC0])
                .unwrap();
        assert!(d.is_fido());
        // A usage consumed by an Input item does not name the next collection.
        let d = ReportDescriptor::parse(&[
            0x06, 0xD0, 0xF1, 0x09, 0x01, 0x75, 0x08, 0x95, 0x01, 0x81, 0x02, 0xA1, 0x01, 0xC0,
        ])
        .unwrap();
        assert_eq!(
            d.collections,
            vec![TopLevelCollection {
                usage: None,
                kind: COLLECTION_APPLICATION
            }]
        );
        assert_eq!(d.input_bits, 8);
    }

    #[test]
    fn push_and_pop_restore_the_usage_page() {
        let d = [
            0x06, 0xD0, 0xF1, // Usage Page (FIDO)
            0xA4, // Push
            0x05, 0x01, // Usage Page (Generic Desktop)
            0xB4, // Pop: back to FIDO
            0x09, 0x01, 0xA1, 0x01, 0xC0,
        ];
        assert!(ReportDescriptor::parse(&d).unwrap().is_fido());
    }

    #[test]
    fn long_items_and_reserved_items_are_skipped() {
        let mut d = vec![0xFE, 0x03, 0x42, 0xAA, 0xBB, 0xCC]; // long item, 3 data bytes
        d.extend_from_slice(&[0x0F, 0x11, 0x22, 0x33, 0x44]); // reserved type, 4 data bytes
        d.extend_from_slice(&[0xF7, 0x00, 0x00, 0x00, 0x00]); // reserved global tag, 4 bytes
        d.extend_from_slice(&[0xF8]); // reserved local tag, no data
        d.extend_from_slice(FIDO);
        d.extend_from_slice(&[0xFE, 0x00, 0x01]); // empty long item at the end
        let d = ReportDescriptor::parse(&d).unwrap();
        assert!(d.is_fido());
        assert_eq!(d.check_ctaphid_reports(), Ok(()));
    }

    #[test]
    fn every_truncation_of_the_fido_descriptor_is_an_error_or_not_fido() {
        for len in 0..FIDO.len() {
            let prefix = &FIDO[..len];
            match ReportDescriptor::parse(prefix) {
                Ok(d) => assert!(!d.is_fido(), "prefix of {len} bytes parsed as FIDO"),
                Err(e) => assert!(
                    matches!(
                        e,
                        DescriptorError::Empty
                            | DescriptorError::Truncated { .. }
                            | DescriptorError::UnclosedCollection { depth: 1 }
                    ),
                    "prefix of {len} bytes: {e:?}"
                ),
            }
        }
        assert_eq!(
            ReportDescriptor::parse(&FIDO[..2]),
            Err(DescriptorError::Truncated { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&FIDO[..FIDO.len() - 1]),
            Err(DescriptorError::UnclosedCollection { depth: 1 })
        );
        // Usage Page and Usage without a collection: well formed, not FIDO.
        let d = ReportDescriptor::parse(&FIDO[..5]).unwrap();
        assert!(d.collections.is_empty());
    }

    #[test]
    fn hostile_descriptors_get_typed_errors() {
        assert_eq!(ReportDescriptor::parse(&[]), Err(DescriptorError::Empty));
        assert_eq!(
            ReportDescriptor::parse(&vec![0x00; MAX_DESCRIPTOR_LEN + 1]),
            Err(DescriptorError::TooLong(MAX_DESCRIPTOR_LEN + 1))
        );
        // A maximal descriptor of zero-size items is fine.
        assert!(ReportDescriptor::parse(&[0x00; MAX_DESCRIPTOR_LEN]).is_ok());
        assert_eq!(
            ReportDescriptor::parse(&[0xC0]),
            Err(DescriptorError::UnbalancedEndCollection { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0xA1, 0x01, 0xC0, 0xC0]),
            Err(DescriptorError::UnbalancedEndCollection { offset: 3 })
        );
        let deep: Vec<u8> = [0xA1, 0x00].repeat(MAX_COLLECTION_DEPTH + 1);
        assert_eq!(
            ReportDescriptor::parse(&deep),
            Err(DescriptorError::TooDeep {
                offset: 2 * MAX_COLLECTION_DEPTH
            })
        );
        let mut ok_deep = [0xA1, 0x00].repeat(MAX_COLLECTION_DEPTH);
        ok_deep.extend(std::iter::repeat_n(0xC0, MAX_COLLECTION_DEPTH));
        assert_eq!(
            ReportDescriptor::parse(&ok_deep).unwrap().collections.len(),
            1
        );
        let many: Vec<u8> = [0xA1, 0x01, 0xC0].repeat(MAX_TOP_LEVEL_COLLECTIONS + 1);
        assert_eq!(
            ReportDescriptor::parse(&many),
            Err(DescriptorError::TooManyCollections)
        );
        let pushes = [0xA4].repeat(MAX_GLOBAL_STACK + 1);
        assert_eq!(
            ReportDescriptor::parse(&pushes),
            Err(DescriptorError::GlobalStackOverflow {
                offset: MAX_GLOBAL_STACK
            })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0xA4, 0xB4, 0xB4]),
            Err(DescriptorError::GlobalStackUnderflow { offset: 2 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x07, 0xD0, 0xF1, 0x01, 0x00]),
            Err(DescriptorError::UsagePageOutOfRange { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x85, 0x00]),
            Err(DescriptorError::ZeroReportId { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x86, 0x00, 0x01]),
            Err(DescriptorError::ReportIdOutOfRange { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x76, 0x01, 0x01]),
            Err(DescriptorError::ReportSizeOutOfRange { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x96, 0x01, 0x30]),
            Err(DescriptorError::ReportCountOutOfRange { offset: 0 })
        );
        // 256 bits × 12288 = 3 Mbit in one Input item: over the 16 KiB report limit.
        assert_eq!(
            ReportDescriptor::parse(&[0x76, 0x00, 0x01, 0x96, 0x00, 0x30, 0x81, 0x02]),
            Err(DescriptorError::ReportTooLong { offset: 6 })
        );
        // Many Output items adding up past the limit: caught at the item that crosses it.
        let mut sum = vec![0x76, 0x00, 0x01, 0x96, 0x00, 0x02]; // 256 bits × 512 = 16 KiB
        sum.extend_from_slice(&[0x91, 0x02, 0x91, 0x02]);
        assert_eq!(
            ReportDescriptor::parse(&sum),
            Err(DescriptorError::ReportTooLong { offset: 8 })
        );
        // Long item header or data cut short.
        assert_eq!(
            ReportDescriptor::parse(&[0xFE]),
            Err(DescriptorError::Truncated { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0xFE, 0x05, 0x01, 0x00]),
            Err(DescriptorError::Truncated { offset: 0 })
        );
        assert_eq!(
            ReportDescriptor::parse(&[0x00, 0x27, 0xFF, 0xFF]),
            Err(DescriptorError::Truncated { offset: 1 })
        );
    }

    #[test]
    fn random_and_mutated_descriptors_never_panic() {
        let mut rng = StdRng::seed_from_u64(0xF1D0);
        let (mut ok, mut err, mut fido) = (0u32, 0u32, 0u32);
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(0..300);
                (0..len).map(|_| rng.r#gen()).collect()
            } else {
                // Flip a few bytes of the good descriptor, sometimes cut or extend it.
                let mut b = FIDO.to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.r#gen();
                }
                if rng.gen_bool(0.2) {
                    b.truncate(rng.gen_range(0..b.len()));
                }
                if rng.gen_bool(0.2) {
                    b.extend((0..rng.gen_range(0..40)).map(|_| rng.r#gen::<u8>()));
                }
                b
            };
            match ReportDescriptor::parse(&bytes) {
                Ok(d) => {
                    ok += 1;
                    assert!(d.collections.len() <= MAX_TOP_LEVEL_COLLECTIONS);
                    assert!(d.input_bits <= MAX_REPORT_BITS && d.output_bits <= MAX_REPORT_BITS);
                    if d.is_fido() {
                        fido += 1;
                    }
                }
                Err(_) => err += 1,
            }
        }
        assert_eq!(ok + err, 20_000);
        // The mutations keep some descriptors valid and some FIDO: the loop reaches the
        // interesting paths rather than failing at the first byte every time.
        assert!(ok > 1_000 && err > 1_000 && fido > 100, "{ok} {err} {fido}");
    }

    // ---- Recorded descriptors (optional, needs PASSKEYD_VECTORS) ----

    /// Every `usb-hid report descriptor` vector of every file in `$PASSKEYD_VECTORS` with
    /// whether the source says it is a FIDO interface, or `None` (skip) when unset outside CI.
    fn recorded_descriptors() -> Option<Vec<(String, Vec<u8>, bool)>> {
        let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PASSKEYD_VECTORS must be set in CI"
            );
            eprintln!("skipping recorded-vector test: PASSKEYD_VECTORS is not set");
            return None;
        };
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for v in doc["vectors"].as_array().unwrap() {
                if v["transport"] != "usb-hid report descriptor" {
                    continue;
                }
                let name = v["name"].as_str().unwrap().to_owned();
                let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
                // The files say it two ways: an explicit expectation, or the decoded usage.
                let decoded = &v["decoded"];
                let fido = match decoded.get("is_fido_authenticator_expected") {
                    Some(b) => b.as_bool().unwrap(),
                    None => decoded["usage_page"]
                        .as_str()
                        .unwrap()
                        .starts_with("0xf1d0"),
                };
                out.push((name, bytes, fido));
            }
        }
        Some(out)
    }

    #[test]
    fn recorded_descriptors_classify_as_their_source_says() {
        let Some(vectors) = recorded_descriptors() else {
            return;
        };
        assert!(vectors.len() >= 4, "expected the four recorded descriptors");
        let mut seen_fido = 0;
        for (name, bytes, fido) in &vectors {
            let d = ReportDescriptor::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(d.is_fido(), *fido, "{name}");
            if *fido {
                seen_fido += 1;
                assert_eq!(d.check_ctaphid_reports(), Ok(()), "{name}");
            }
        }
        assert!(seen_fido >= 2);
    }
}
