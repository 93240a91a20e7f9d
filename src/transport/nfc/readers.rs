//! What the monitor thread knows about each reader, and what a PC/SC status change means for
//! it: pure bookkeeping, so that every transition is tested without pcscd.

use std::{collections::BTreeMap, ffi::CString};

use pcsc::State;

/// One reader's state as `SCardGetStatusChange` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Observation {
    /// A card is there and answered (present, not mute, reader usable).
    pub(super) usable_card: bool,
    /// The reader's card event counter (upper 16 bits of `dwEventState` in pcsc-lite): it
    /// moves on each insertion and removal, so a card swapped between two calls is seen.
    pub(super) count: u32,
    /// The state bits without CHANGED, to tell whether anything moved since a refusal.
    pub(super) state: State,
}

impl Observation {
    /// Reads a reader's event state and counter.
    pub(super) fn new(state: State, count: u32) -> Self {
        let unusable = State::MUTE | State::UNKNOWN | State::UNAVAILABLE | State::IGNORE;
        Self {
            usable_card: state.contains(State::PRESENT) && !state.intersects(unusable),
            count,
            state: state - State::CHANGED,
        }
    }
}

/// What the monitor has to do for a reader after an observation.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<C> {
    /// Nothing changed that matters.
    Keep,
    /// A card arrived (or a refused card's state moved): connect to it.
    Connect,
    /// The connected card left: report it removed and let its thread go.
    Remove(C),
    /// The connected card left and another is there (a re-tap between two status changes):
    /// remove the old one, then connect to the new one.
    Replace(C),
}

/// The card side of one reader.
#[derive(Debug)]
enum Slot<C> {
    /// No card, or not one worth connecting to.
    Empty,
    /// Connected; `card` is what the monitor keeps for it (the card thread's stop signal).
    Connected { count: u32, card: C },
    /// Connecting failed in this state; tried again once the state moves.
    Refused { count: u32, state: State },
}

/// The readers the monitor watches, by PC/SC name, with their cards.
#[derive(Debug)]
pub(super) struct Readers<C> {
    slots: BTreeMap<CString, Slot<C>>,
}

impl<C> Default for Readers<C> {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
        }
    }
}

impl<C> Readers<C> {
    /// Decides what `observation` of reader `name` means. A refusal is forgotten once the
    /// card leaves.
    pub(super) fn observe(&mut self, name: &CString, observation: Observation) -> Step<C> {
        let slot = self.slots.remove(name).unwrap_or(Slot::Empty);
        let (slot, step) = match (slot, observation.usable_card) {
            (Slot::Connected { count, card }, true) if count == observation.count => {
                (Slot::Connected { count, card }, Step::Keep)
            }
            (Slot::Connected { card, .. }, true) => (Slot::Empty, Step::Replace(card)),
            (Slot::Connected { card, .. }, false) => (Slot::Empty, Step::Remove(card)),
            (Slot::Refused { count, state }, true)
                if count == observation.count && state == observation.state =>
            {
                (Slot::Refused { count, state }, Step::Keep)
            }
            (Slot::Empty | Slot::Refused { .. }, true) => (Slot::Empty, Step::Connect),
            (Slot::Empty | Slot::Refused { .. }, false) => (Slot::Empty, Step::Keep),
        };
        self.slots.insert(name.clone(), slot);
        step
    }

    /// Records a connected card, after [`Step::Connect`] or [`Step::Replace`].
    pub(super) fn connected(&mut self, name: &CString, observation: Observation, card: C) {
        self.slots.insert(
            name.clone(),
            Slot::Connected {
                count: observation.count,
                card,
            },
        );
    }

    /// Records that connecting failed; no new attempt until the reader's state moves.
    pub(super) fn refused(&mut self, name: &CString, observation: Observation) {
        self.slots.insert(
            name.clone(),
            Slot::Refused {
                count: observation.count,
                state: observation.state,
            },
        );
    }

    /// Forgets the readers not in `present`, returning their connected cards.
    pub(super) fn retain(&mut self, present: &[CString]) -> Vec<(CString, C)> {
        let gone: Vec<CString> = self
            .slots
            .keys()
            .filter(|name| !present.contains(name))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|name| match self.slots.remove(&name) {
                Some(Slot::Connected { card, .. }) => Some((name, card)),
                _ => None,
            })
            .collect()
    }

    /// Forgets every reader (pcscd went away), returning the connected cards.
    pub(super) fn drain(&mut self) -> Vec<(CString, C)> {
        self.retain(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> CString {
        CString::new(text).unwrap()
    }

    const EMPTY: State = State::EMPTY;

    fn present() -> State {
        State::PRESENT | State::CHANGED
    }

    #[test]
    fn observation_reads_usable_cards() {
        let seen = Observation::new(State::PRESENT | State::CHANGED | State::INUSE, 3);
        assert!(seen.usable_card);
        assert_eq!(seen.count, 3);
        assert_eq!(seen.state, State::PRESENT | State::INUSE);
        for unusable in [
            State::EMPTY,
            State::PRESENT | State::MUTE,
            State::PRESENT | State::UNAVAILABLE,
            State::UNKNOWN | State::CHANGED,
            State::PRESENT | State::IGNORE,
        ] {
            assert!(!Observation::new(unusable, 1).usable_card, "{unusable:?}");
        }
    }

    #[test]
    fn card_arrives_stays_and_leaves() {
        let mut readers = Readers::default();
        let reader = name("Virtual PCD 00 00");
        assert_eq!(
            readers.observe(&reader, Observation::new(EMPTY, 0)),
            Step::Keep
        );
        let arrived = Observation::new(present(), 1);
        assert_eq!(readers.observe(&reader, arrived), Step::Connect);
        readers.connected(&reader, arrived, "card 1");
        // INUSE comes and goes as the card thread transmits: the same card.
        let in_use = Observation::new(State::PRESENT | State::INUSE | State::CHANGED, 1);
        assert_eq!(readers.observe(&reader, in_use), Step::Keep);
        assert_eq!(
            readers.observe(&reader, Observation::new(EMPTY | State::CHANGED, 2)),
            Step::Remove("card 1")
        );
        assert_eq!(
            readers.observe(&reader, Observation::new(EMPTY, 2)),
            Step::Keep
        );
    }

    #[test]
    fn a_retap_between_two_status_changes_replaces_the_card() {
        let mut readers = Readers::default();
        let reader = name("ACS ACR122U PICC Interface 00 00");
        let first = Observation::new(present(), 1);
        assert_eq!(readers.observe(&reader, first), Step::Connect);
        readers.connected(&reader, first, 1);
        // Removed (count 2) and tapped again (count 3) before the monitor looked.
        let second = Observation::new(present(), 3);
        assert_eq!(readers.observe(&reader, second), Step::Replace(1));
        readers.connected(&reader, second, 2);
        assert_eq!(readers.observe(&reader, second), Step::Keep);
    }

    #[test]
    fn a_refused_card_is_retried_only_when_its_state_moves() {
        let mut readers: Readers<()> = Readers::default();
        let reader = name("Reader 00 00");
        // Someone holds the card exclusively: connecting fails.
        let exclusive = Observation::new(present() | State::EXCLUSIVE | State::INUSE, 1);
        assert_eq!(readers.observe(&reader, exclusive), Step::Connect);
        readers.refused(&reader, exclusive);
        assert_eq!(readers.observe(&reader, exclusive), Step::Keep);
        // Released: try again.
        let released = Observation::new(present(), 1);
        assert_eq!(readers.observe(&reader, released), Step::Connect);
        readers.refused(&reader, released);
        // Gone, then back: a new card, a new attempt.
        assert_eq!(
            readers.observe(&reader, Observation::new(EMPTY, 2)),
            Step::Keep
        );
        assert_eq!(
            readers.observe(&reader, Observation::new(present(), 3)),
            Step::Connect
        );
    }

    #[test]
    fn a_mute_card_is_not_connected() {
        let mut readers: Readers<()> = Readers::default();
        let reader = name("Reader 00 00");
        let mute = Observation::new(present() | State::MUTE, 1);
        assert_eq!(readers.observe(&reader, mute), Step::Keep);
    }

    #[test]
    fn vanished_readers_give_back_their_cards() {
        let mut readers = Readers::default();
        let (a, b, c) = (name("A 00 00"), name("B 00 00"), name("C 00 00"));
        let seen = Observation::new(present(), 1);
        for (reader, card) in [(&a, 'a'), (&b, 'b')] {
            assert_eq!(readers.observe(reader, seen), Step::Connect);
            readers.connected(reader, seen, card);
        }
        assert_eq!(readers.observe(&c, Observation::new(EMPTY, 0)), Step::Keep);
        assert_eq!(
            readers.retain(&[a.clone(), c.clone()]),
            vec![(b.clone(), 'b')]
        );
        assert_eq!(readers.drain(), vec![(a.clone(), 'a')]);
        assert_eq!(readers.drain(), vec![]);
        // A reader seen again after a drain starts afresh.
        assert_eq!(readers.observe(&a, seen), Step::Connect);
    }
}
