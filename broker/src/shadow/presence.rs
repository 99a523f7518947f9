//! A thing's presence (`connected`, `lastSeen`) in its shadows' documents.
//!
//! The tracker (`crate::presence`) counts connections; the store thread
//! records what it hands over here, one record per thing, and republishes
//! the retained state of each of the thing's shadows with it. Records
//! are kept only for things that have a shadow or a device secret, so
//! tools that connect under a passing client id leave nothing behind.

use super::render::{Out, Render};
use crate::presence::Presence;
use crate::store::{PresenceRecord, StoreError, Tables};

/// Records each thing's new presence and renders the retained states it
/// changes.
pub(super) fn apply(
    t: &mut Tables<'_>,
    things: &[(String, PresenceRecord)],
    now: u64,
    out: &mut Vec<Out>,
) -> Result<(), StoreError> {
    for (thing, record) in things {
        let stored = t.presence(thing)?;
        if stored.as_ref() == Some(record) {
            continue;
        }
        let shadows = t.shadows_of(thing)?;
        let known = stored.is_some() || shadows.iter().any(|(_, s)| s.shadow.exists);
        if !known && !t.has_device(thing)? {
            continue;
        }
        t.put_presence(thing, record)?;
        for (id, s) in shadows.into_iter().filter(|(_, s)| s.shadow.exists) {
            out.push(Out::from(Render::State {
                id,
                shadow: s.shadow,
                presence: Some(record.clone()),
                now,
            }));
        }
    }
    Ok(())
}

/// The presence of `thing` for a shadow just written. A thing with no
/// record that is connected right now (its first shadow was just made)
/// gets its record here.
pub(super) fn for_write(
    t: &mut Tables<'_>,
    thing: &str,
    tracker: Option<&Presence>,
) -> Result<Option<PresenceRecord>, StoreError> {
    if let Some(record) = t.presence(thing)? {
        return Ok(Some(record));
    }
    let Some(live) = tracker.and_then(|p| p.live(thing)) else {
        return Ok(None);
    };
    t.put_presence(thing, &live)?;
    Ok(Some(live))
}
