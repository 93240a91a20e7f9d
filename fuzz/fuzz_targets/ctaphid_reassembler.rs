#![no_main]
//! CTAPHID reassembly: arbitrary runs of reports (of any length) pushed into a `Reassembler`
//! and into a `Transaction`, plus INIT-response parsing. Every outcome must be a value or a
//! typed error, and a completed message must respect the length limit.

use ctap::ctaphid::{self, Cid, Command, PushOutcome, Reassembler, Transaction, TransactionEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Report boundaries: the selector picks a report length around 64 so that short and long
    // reports are explored as well as well-formed ones.
    let report_len = 56 + usize::from(selector % 16);
    // Listen on the channel the first report names, so that most frames are "ours" and the
    // reassembly paths (not only the foreign-frame filter) get explored.
    let cid = match rest.get(..4) {
        Some(&[a, b, c, d]) => Cid::from_bytes([a, b, c, d]),
        _ => return,
    };
    let limit = 1024;
    let mut reassembler = Reassembler::new(cid, limit);
    let mut transaction = Transaction::new(cid, Command::Cbor, &[0x04], limit).ok();
    for report in rest.chunks(report_len) {
        if let Ok(PushOutcome::Complete(message)) = reassembler.push(report) {
            assert!(message.payload.len() <= limit);
        }
        if let Some(t) = transaction.as_mut()
            && let Ok(TransactionEvent::Response(payload)) = t.on_report(report)
        {
            assert!(payload.len() <= ctaphid::MAX_MESSAGE_LEN);
        }
    }
    let _ = ctaphid::parse_init_response(rest, &[0; 8]);
});
