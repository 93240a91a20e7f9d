//! One thread per connected card: takes APDUs from the card's [`ApduLink`] and transmits them.
//!
//! [`ApduLink`]: crate::transport::ApduLink
//!
//! The card has its own PC/SC context. pcsc-lite holds a context's lock for the whole of an
//! `SCardGetStatusChange`, so a transmit on the monitor's context would wait for the next
//! reader event; with a context per card, cards transmit independently of each other and of
//! the monitor.

use std::{
    future::Future,
    pin::Pin,
    task::Poll,
    thread::{self, JoinHandle},
};

use pcsc::{Card, Disposition, Protocols, ShareMode};
use tokio::sync::{mpsc, oneshot};

use crate::transport::{ApduRequest, LinkError};

/// The longest command APDU handed to pcsc-lite: an extended APDU with 65535 bytes of data and
/// a 3-byte Le is 4 + 3 + 65535 + 3 = 65545 bytes, under pcsc-lite's `MAX_BUFFER_SIZE_EXTENDED`.
pub(super) const MAX_COMMAND_LEN: usize = pcsc::MAX_BUFFER_SIZE_EXTENDED;

/// The buffer a response is received into: 65536 bytes of data and SW1 SW2 fit.
const RESPONSE_BUFFER_LEN: usize = pcsc::MAX_BUFFER_SIZE_EXTENDED;

// The longest extended command and response APDUs (ISO 7816-4 §5.1) fit.
const _: () = assert!(4 + 3 + 0xffff + 3 <= MAX_COMMAND_LEN);
const _: () = assert!(0x1_0000 + 2 <= RESPONSE_BUFFER_LEN);

/// What a transmit error means for the link.
pub(super) fn link_error(error: pcsc::Error) -> LinkError {
    match error {
        // The card, its reader or pcscd is gone: this handle will not work again.
        pcsc::Error::RemovedCard
        | pcsc::Error::NoSmartcard
        | pcsc::Error::UnknownReader
        | pcsc::Error::ReaderUnavailable
        | pcsc::Error::NoService
        | pcsc::Error::ServiceStopped
        | pcsc::Error::InvalidHandle => LinkError::Disconnected,
        other => LinkError::Pcsc(other.to_string()),
    }
}

/// Refuses a command longer than pcsc-lite takes, before it reaches the library.
fn check_len(apdu: &[u8]) -> Result<(), LinkError> {
    if apdu.len() > MAX_COMMAND_LEN {
        return Err(LinkError::Pcsc(format!(
            "a {}-byte APDU exceeds PC/SC's {MAX_COMMAND_LEN}-byte limit",
            apdu.len()
        )));
    }
    Ok(())
}

/// Transmits one APDU.
fn transmit(card: &mut Card, apdu: &[u8], buffer: &mut [u8]) -> Result<Vec<u8>, LinkError> {
    check_len(apdu)?;
    match card.transmit(apdu, buffer) {
        Ok(response) => Ok(response.to_vec()),
        Err(pcsc::Error::ResetCard) => {
            // Another application reset the card: the handle must acknowledge it before it
            // works again. The applet selection is lost, so this APDU fails; the device layer
            // selects again.
            let reconnected = card
                .reconnect(ShareMode::Shared, Protocols::ANY, Disposition::LeaveCard)
                .map_err(link_error);
            Err(reconnected
                .err()
                .unwrap_or_else(|| LinkError::Pcsc(pcsc::Error::ResetCard.to_string())))
        }
        Err(error) => Err(link_error(error)),
    }
}

/// The next request, or `None` once the card is gone (the monitor dropped `gone`'s sender) or
/// the device layer dropped the link.
async fn next_request(
    requests: &mut mpsc::Receiver<ApduRequest>,
    gone: &mut oneshot::Receiver<()>,
) -> Option<ApduRequest> {
    std::future::poll_fn(|cx| {
        if Pin::new(&mut *gone).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        requests.poll_recv(cx)
    })
    .await
}

/// Serves `card` until it is gone or its link is dropped, then disconnects it (leaving it
/// powered, as other applications may use it).
fn run(mut card: Card, mut requests: mpsc::Receiver<ApduRequest>, mut gone: oneshot::Receiver<()>) {
    // A runtime without IO or timer drivers, only to wait on the two channels at once.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        tracing::error!("NFC card thread could not build its runtime");
        return;
    };
    let mut buffer = vec![0u8; RESPONSE_BUFFER_LEN];
    while let Some(request) = runtime.block_on(next_request(&mut requests, &mut gone)) {
        let result = transmit(&mut card, &request.apdu, &mut buffer);
        let disconnected = matches!(result, Err(LinkError::Disconnected));
        // The requester may have given up (its deadline passed); nothing to do then.
        let _ = request.reply.send(result);
        if disconnected {
            break;
        }
    }
    // Closing the link before the card: a request sent from now on fails at once.
    drop(requests);
    if let Err((_, error)) = card.disconnect(Disposition::LeaveCard) {
        tracing::debug!(%error, "NFC card disconnect failed");
    }
}

/// Starts the thread of a connected card.
pub(super) fn spawn(
    card: Card,
    requests: mpsc::Receiver<ApduRequest>,
    gone: oneshot::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("nfc-card".into())
        .spawn(move || run(card, requests, gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_cards_readers_and_pcscd_disconnect_the_link() {
        for error in [
            pcsc::Error::RemovedCard,
            pcsc::Error::NoSmartcard,
            pcsc::Error::UnknownReader,
            pcsc::Error::ReaderUnavailable,
            pcsc::Error::NoService,
            pcsc::Error::ServiceStopped,
            pcsc::Error::InvalidHandle,
        ] {
            assert!(
                matches!(link_error(error), LinkError::Disconnected),
                "{error:?}"
            );
        }
    }

    #[test]
    fn other_pcsc_errors_keep_their_text() {
        let error = link_error(pcsc::Error::CommError);
        assert!(
            matches!(&error, LinkError::Pcsc(text) if text == &pcsc::Error::CommError.to_string()),
            "{error:?}"
        );
        assert!(matches!(
            link_error(pcsc::Error::Timeout),
            LinkError::Pcsc(_)
        ));
    }

    #[test]
    fn commands_longer_than_pcsc_takes_are_refused() {
        assert!(check_len(&vec![0; 4 + 3 + 0xffff + 3]).is_ok());
        assert!(check_len(&vec![0; MAX_COMMAND_LEN]).is_ok());
        let error = check_len(&vec![0; MAX_COMMAND_LEN + 1]).unwrap_err();
        assert!(
            matches!(&error, LinkError::Pcsc(text) if text.contains(&format!("{}-byte APDU", MAX_COMMAND_LEN + 1))),
            "{error:?}"
        );
    }

    #[test]
    fn waiting_ends_when_the_card_is_gone_or_the_link_dropped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A request waiting is served first... unless the card is gone.
        let (tx, mut rx) = mpsc::channel(1);
        let (gone_tx, mut gone) = oneshot::channel::<()>();
        let (reply, _reply_rx) = oneshot::channel();
        tx.try_send(ApduRequest {
            apdu: vec![0x00, 0xa4, 0x04, 0x00],
            reply,
        })
        .unwrap();
        let next = runtime.block_on(next_request(&mut rx, &mut gone)).unwrap();
        assert_eq!(next.apdu, vec![0x00, 0xa4, 0x04, 0x00]);
        drop(gone_tx);
        assert!(runtime.block_on(next_request(&mut rx, &mut gone)).is_none());
        // The device layer dropped its link.
        let (tx, mut rx) = mpsc::channel::<ApduRequest>(1);
        let (_gone_tx, mut gone) = oneshot::channel::<()>();
        drop(tx);
        assert!(runtime.block_on(next_request(&mut rx, &mut gone)).is_none());
        // Gone wakes a thread that waits.
        let (_tx, mut rx) = mpsc::channel::<ApduRequest>(1);
        let (gone_tx, mut gone) = oneshot::channel::<()>();
        let waiter = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(next_request(&mut rx, &mut gone)).is_none()
        });
        thread::sleep(std::time::Duration::from_millis(50));
        drop(gone_tx);
        assert!(waiter.join().unwrap());
    }
}
