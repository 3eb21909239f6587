//! Pseudo ids: stand-ins for the `contact_id` and `conversation_id` a DISPATCH app's callbacks
//! leave empty, so a consumer written for CONVERSATION apps can key its threads on them and
//! reply with them.
//!
//! A pseudo id seals (project, app, channel, identity) with AES-SIV (RFC 5297), a
//! deterministic AEAD: the same identity of the same app always gives the same id, so no
//! storage is needed to mint or to resolve one, any replica holding the key resolves it, and ids
//! stay the same across restarts. The id is `mgpc_` (contact) or `mgpv_` (conversation) and the
//! sealed bytes in unpadded URL-safe base64: letters, digits, `-` and `_`, so it passes the
//! gateway's id rule ([`crate::domain::valid_id`]); no Sinch id (a ULID, uppercase) has either
//! prefix. The kind is authenticated too: a pseudo contact id does not open as a conversation id.
//!
//! - **Length**: 5 + ⌈4·(16 + n)/3⌉ characters, n the packed plaintext (UUID project and ULID
//!   app ids take 16 bytes each, a known channel 1 byte, a phone number half a byte per digit):
//!   about 80 characters for a phone number, never more than [`MAX_ID_LEN`]; an identity too
//!   long to fit is not minted ([`PseudoIdError::TooLong`]).
//! - **What it reveals**: without the key, nothing of the identity; but being deterministic, two
//!   equal ids mean the same identity of the same app (equality within one app is visible, as it
//!   would be with a real contact id), and the length hints at the identity's length.
//! - **Rotation**: several keys; ids are minted with the first and resolved with any, so a new
//!   key goes first and the old one stays listed for as long as consumers may still hold ids
//!   minted with it. Ids minted with different keys differ: a consumer sees new ids for known
//!   identities after a rotation.

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes128Siv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::MAX_ID_LEN;

/// Bytes of one key (AES-128-SIV takes two 128-bit keys).
pub const KEY_BYTES: usize = 32;
/// The prefix of a pseudo contact id.
pub const CONTACT_PREFIX: &str = "mgpc_";
/// The prefix of a pseudo conversation id.
pub const CONVERSATION_PREFIX: &str = "mgpv_";
/// Bytes the seal adds (the synthetic IV).
const TAG_BYTES: usize = 16;

/// Which id a pseudo id stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PseudoKind {
    /// A `contact_id`.
    Contact,
    /// A `conversation_id`.
    Conversation,
}

impl PseudoKind {
    /// The id prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            PseudoKind::Contact => CONTACT_PREFIX,
            PseudoKind::Conversation => CONVERSATION_PREFIX,
        }
    }

    /// The kind an id's prefix names, if any.
    pub fn of(id: &str) -> Option<PseudoKind> {
        if id.starts_with(CONTACT_PREFIX) {
            Some(PseudoKind::Contact)
        } else if id.starts_with(CONVERSATION_PREFIX) {
            Some(PseudoKind::Conversation)
        } else {
            None
        }
    }

    /// Authenticated with the sealed bytes, so one kind never opens as the other.
    fn associated_data(self) -> &'static [u8] {
        match self {
            PseudoKind::Contact => b"modegate pseudo contact id v1",
            PseudoKind::Conversation => b"modegate pseudo conversation id v1",
        }
    }
}

/// What a pseudo id stands for: one channel identity of one app.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PseudoIdentity {
    /// Project id.
    pub project: String,
    /// App id.
    pub app: String,
    /// Channel, e.g. `SMS`.
    pub channel: String,
    /// Identity on the channel, e.g. a phone number.
    pub identity: String,
}

/// Why a pseudo id could not be minted or opened, or keys not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PseudoIdError {
    /// The id has neither pseudo prefix: it is an ordinary id.
    #[error("not a pseudo id")]
    NotPseudo,
    /// The prefix is there but the rest is not sealed bytes.
    #[error("malformed pseudo id")]
    Malformed,
    /// No key opens it: tampered with, of another kind, or minted with a key no longer held.
    #[error("pseudo id does not verify")]
    DoesNotVerify,
    /// The identity is too long for an id within the length limit.
    #[error("identity too long for a pseudo id")]
    TooLong,
    /// The key list is unusable (the message never quotes a key).
    #[error("{0}")]
    Keys(String),
}

/// The keys pseudo ids are minted and resolved with.
#[derive(Clone)]
pub struct PseudoIds {
    keys: Vec<[u8; KEY_BYTES]>,
}

impl std::fmt::Debug for PseudoIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudoIds")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Whether `id` carries a pseudo id prefix (it may still not verify).
pub fn is_pseudo(id: &str) -> bool {
    PseudoKind::of(id).is_some()
}

impl PseudoIds {
    /// Keys as the environment variable holds them: 64 hex characters each, comma-separated,
    /// the minting key first.
    pub fn from_keys(text: &str) -> Result<PseudoIds, PseudoIdError> {
        let mut keys = Vec::new();
        for (i, part) in text.split(',').map(str::trim).enumerate() {
            let bytes = (part.len() == 2 * KEY_BYTES)
                .then(|| {
                    (0..KEY_BYTES)
                        .map(|j| u8::from_str_radix(part.get(2 * j..2 * j + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten();
            match bytes.and_then(|b| <[u8; KEY_BYTES]>::try_from(b).ok()) {
                Some(key) => keys.push(key),
                None => {
                    return Err(PseudoIdError::Keys(format!(
                        "key {} of {} is not 64 hex characters (32 random bytes, e.g. from `openssl rand -hex 32`)",
                        i + 1,
                        text.split(',').count()
                    )))
                }
            }
        }
        Ok(PseudoIds { keys })
    }

    /// The keys in the environment variable `name` (`callbacks.id_key_env`); the message
    /// names the variable, never a key.
    pub fn from_env(name: &str) -> Result<PseudoIds, String> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => {
                PseudoIds::from_keys(&v).map_err(|e| format!("environment variable {name}: {e}"))
            }
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        }
    }

    /// Keys given as bytes, the minting key first (at least one).
    pub fn from_key_bytes(keys: Vec<[u8; KEY_BYTES]>) -> Result<PseudoIds, PseudoIdError> {
        if keys.is_empty() {
            return Err(PseudoIdError::Keys("no key".into()));
        }
        Ok(PseudoIds { keys })
    }

    /// The pseudo id of `who` of `kind`, sealed with the first key.
    pub fn mint(&self, kind: PseudoKind, who: &PseudoIdentity) -> Result<String, PseudoIdError> {
        let plain = pack(who).ok_or(PseudoIdError::TooLong)?;
        let mut siv = Aes128Siv::new((&self.keys[0]).into());
        let sealed = siv
            .encrypt([kind.associated_data()], &plain)
            .map_err(|_| PseudoIdError::TooLong)?;
        let mut id = String::with_capacity(kind.prefix().len() + sealed.len() * 4 / 3 + 3);
        id.push_str(kind.prefix());
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut id);
        if id.len() > MAX_ID_LEN {
            return Err(PseudoIdError::TooLong);
        }
        Ok(id)
    }

    /// What a pseudo id stands for, and its kind, if one of the keys opens it.
    pub fn open(&self, id: &str) -> Result<(PseudoKind, PseudoIdentity), PseudoIdError> {
        let kind = PseudoKind::of(id).ok_or(PseudoIdError::NotPseudo)?;
        let sealed = URL_SAFE_NO_PAD
            .decode(&id.as_bytes()[kind.prefix().len()..])
            .map_err(|_| PseudoIdError::Malformed)?;
        if sealed.len() <= TAG_BYTES {
            return Err(PseudoIdError::Malformed);
        }
        for key in &self.keys {
            let mut siv = Aes128Siv::new(key.into());
            if let Ok(plain) = siv.decrypt([kind.associated_data()], &sealed) {
                // Sealed bytes that verify were packed by `mint`.
                return unpack(&plain)
                    .map(|who| (kind, who))
                    .ok_or(PseudoIdError::Malformed);
            }
        }
        Err(PseudoIdError::DoesNotVerify)
    }

    /// [`PseudoIds::open`] for an id that must be of `kind` and minted for `project`/`app`.
    pub fn open_for(
        &self,
        kind: PseudoKind,
        id: &str,
        project: &str,
        app: &str,
    ) -> Result<PseudoIdentity, PseudoIdError> {
        match self.open(id)? {
            (k, who) if k == kind && who.project == project && who.app == app => Ok(who),
            _ => Err(PseudoIdError::DoesNotVerify),
        }
    }
}

// Packing: a flags byte, then project, app, channel and identity, each in its shortest form.
const PROJECT_UUID: u8 = 1;
const APP_ULID: u8 = 2;
const IDENTITY_DIGITS: u8 = 4;
const IDENTITY_ODD: u8 = 8;

/// Channels written as one byte (index + 1); others as a length-prefixed name (0, len, bytes).
const CHANNELS: [&str; 14] = [
    "SMS",
    "WHATSAPP",
    "RCS",
    "MESSENGER",
    "VIBER",
    "VIBERBM",
    "MMS",
    "INSTAGRAM",
    "TELEGRAM",
    "KAKAOTALK",
    "KAKAOTALKCHAT",
    "LINE",
    "WECHAT",
    "APPLEBC",
];

/// Longest plaintext whose id fits within [`MAX_ID_LEN`].
const MAX_PLAIN: usize = (MAX_ID_LEN - 5) * 3 / 4 - TAG_BYTES;

fn pack(who: &PseudoIdentity) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(0);
    let mut flags = 0;
    match uuid_bytes(&who.project) {
        Some(b) => {
            flags |= PROJECT_UUID;
            out.extend_from_slice(&b);
        }
        None => short_string(&mut out, &who.project)?,
    }
    match ulid_bytes(&who.app) {
        Some(b) => {
            flags |= APP_ULID;
            out.extend_from_slice(&b);
        }
        None => short_string(&mut out, &who.app)?,
    }
    match CHANNELS.iter().position(|c| *c == who.channel) {
        Some(i) => out.push(i as u8 + 1),
        None => {
            out.push(0);
            short_string(&mut out, &who.channel)?;
        }
    }
    let id = who.identity.as_bytes();
    if !id.is_empty() && id.iter().all(u8::is_ascii_digit) {
        flags |= IDENTITY_DIGITS;
        if id.len() % 2 == 1 {
            flags |= IDENTITY_ODD;
        }
        for pair in id.chunks(2) {
            let hi = pair[0] - b'0';
            let lo = pair.get(1).map_or(0, |d| d - b'0');
            out.push(hi << 4 | lo);
        }
    } else {
        out.extend_from_slice(id);
    }
    out[0] = flags;
    (out.len() <= MAX_PLAIN).then_some(out)
}

fn unpack(plain: &[u8]) -> Option<PseudoIdentity> {
    let (&flags, mut rest) = plain.split_first()?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let project = if flags & PROJECT_UUID != 0 {
        uuid_text(take(16)?)
    } else {
        let n = usize::from(*take(1)?.first()?);
        String::from_utf8(take(n)?.to_vec()).ok()?
    };
    let app = if flags & APP_ULID != 0 {
        ulid_text(take(16)?)
    } else {
        let n = usize::from(*take(1)?.first()?);
        String::from_utf8(take(n)?.to_vec()).ok()?
    };
    let code = *take(1)?.first()?;
    let channel = if code == 0 {
        let n = usize::from(*take(1)?.first()?);
        String::from_utf8(take(n)?.to_vec()).ok()?
    } else {
        CHANNELS.get(usize::from(code) - 1)?.to_string()
    };
    let identity = if flags & IDENTITY_DIGITS != 0 {
        let mut s = String::with_capacity(rest.len() * 2);
        for b in rest {
            s.push(char::from(b'0' + (b >> 4)));
            s.push(char::from(b'0' + (b & 0xF)));
        }
        if flags & IDENTITY_ODD != 0 {
            s.pop();
        }
        s
    } else {
        String::from_utf8(rest.to_vec()).ok()?
    };
    Some(PseudoIdentity {
        project,
        app,
        channel,
        identity,
    })
}

fn short_string(out: &mut Vec<u8>, s: &str) -> Option<()> {
    out.push(u8::try_from(s.len()).ok()?);
    out.extend_from_slice(s.as_bytes());
    Some(())
}

/// A canonical lowercase UUID's 16 bytes.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|c| *c != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *out.get_mut(i)? = digit(pair[0])? << 4 | digit(*pair.get(1)?)?;
    }
    Some(out)
}

fn uuid_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A canonical (uppercase Crockford base32) ULID's 16 bytes.
fn ulid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in b.iter().enumerate() {
        let d = CROCKFORD.iter().position(|x| x == c)? as u128;
        // 26 digits hold 130 bits: the first may carry only 3.
        if i == 0 && d > 7 {
            return None;
        }
        value = value << 5 | d;
    }
    Some(value.to_be_bytes())
}

fn ulid_text(b: &[u8]) -> String {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(b);
    let value = u128::from_be_bytes(bytes);
    (0..26)
        .map(|i| char::from(CROCKFORD[((value >> ((25 - i) * 5)) & 0x1F) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(first: u8) -> PseudoIds {
        PseudoIds::from_key_bytes(vec![[first; KEY_BYTES]]).expect("keys")
    }

    fn who(identity: &str) -> PseudoIdentity {
        PseudoIdentity {
            project: "e2df3a34-a71b-4448-9db5-a8d2baad28e4".into(),
            app: "01FJA8B466Y0R2GNXD78MD9SM1".into(),
            channel: "SMS".into(),
            identity: identity.into(),
        }
    }

    #[test]
    fn a_phone_number_gives_a_short_valid_id() {
        let id = keys(1)
            .mint(PseudoKind::Contact, &who("46701234567"))
            .expect("mint");
        assert!(id.starts_with(CONTACT_PREFIX), "{id}");
        assert!(crate::domain::valid_id(&id), "{id}");
        assert!(id.len() <= 80, "{} characters: {id}", id.len());
        assert!(!id.contains("4670"), "{id}");
    }

    #[test]
    fn kinds_do_not_open_as_each_other() {
        let k = keys(2);
        let contact = k.mint(PseudoKind::Contact, &who("1")).expect("mint");
        let conversation = k.mint(PseudoKind::Conversation, &who("1")).expect("mint");
        assert_ne!(contact[5..], conversation[5..]);
        let forged = format!("{CONVERSATION_PREFIX}{}", &contact[5..]);
        assert_eq!(k.open(&forged), Err(PseudoIdError::DoesNotVerify));
    }

    #[test]
    fn ordinary_and_malformed_ids_are_told_apart() {
        let k = keys(3);
        assert_eq!(
            k.open("01FJA8B466Y0R2GNXD78MD9SM1"),
            Err(PseudoIdError::NotPseudo)
        );
        assert!(!is_pseudo("01FJA8B466Y0R2GNXD78MD9SM1"));
        assert_eq!(k.open("mgpc_"), Err(PseudoIdError::Malformed));
        assert_eq!(k.open("mgpc_!!!"), Err(PseudoIdError::Malformed));
    }

    #[test]
    fn another_app_is_refused_by_open_for() {
        let k = keys(4);
        let w = who("46701234567");
        let id = k.mint(PseudoKind::Contact, &w).expect("mint");
        assert_eq!(
            k.open_for(PseudoKind::Contact, &id, &w.project, &w.app),
            Ok(w.clone())
        );
        assert_eq!(
            k.open_for(
                PseudoKind::Contact,
                &id,
                &w.project,
                "01FJA8B466Y0R2GNXD78MD9SM2"
            ),
            Err(PseudoIdError::DoesNotVerify)
        );
        assert_eq!(
            k.open_for(PseudoKind::Conversation, &id, &w.project, &w.app),
            Err(PseudoIdError::DoesNotVerify)
        );
    }

    #[test]
    fn keys_are_read_from_hex_and_rotate() {
        let old = "11".repeat(32);
        let new = "22".repeat(32);
        let before = PseudoIds::from_keys(&old).expect("one key");
        let after = PseudoIds::from_keys(&format!("{new}, {old}")).expect("two keys");
        let id = before.mint(PseudoKind::Contact, &who("5")).expect("mint");
        assert_eq!(after.open(&id).expect("old ids resolve").1, who("5"));
        assert_ne!(
            after.mint(PseudoKind::Contact, &who("5")).expect("mint"),
            id
        );
        for bad in ["", "zz", &"1".repeat(63), &format!("{new},")] {
            let e = PseudoIds::from_keys(bad).expect_err(bad);
            assert!(!e.to_string().contains(&new), "{e}");
        }
    }

    #[test]
    fn a_too_long_identity_is_not_minted() {
        let w = who(&"x".repeat(80));
        assert_eq!(
            keys(5).mint(PseudoKind::Contact, &w),
            Err(PseudoIdError::TooLong)
        );
    }

    fn identity() -> impl Strategy<Value = PseudoIdentity> {
        let project = prop_oneof![
            Just("e2df3a34-a71b-4448-9db5-a8d2baad28e4".to_string()),
            "[a-zA-Z0-9-]{1,36}",
        ];
        let app = prop_oneof!["[0-7][0-9A-HJKMNP-TV-Z]{25}", "[a-zA-Z0-9_.-]{1,26}"];
        let channel = prop_oneof![Just("SMS".to_string()), "[A-Z_]{1,16}"];
        let identity = prop_oneof!["[0-9]{1,20}", "\\PC{0,20}"];
        (project, app, channel, identity).prop_map(|(project, app, channel, identity)| {
            PseudoIdentity {
                project,
                app,
                channel,
                identity,
            }
        })
    }

    fn kind() -> impl Strategy<Value = PseudoKind> {
        prop_oneof![Just(PseudoKind::Contact), Just(PseudoKind::Conversation)]
    }

    proptest! {
        #[test]
        fn mint_then_open_gives_back_the_identity(w in identity(), k in kind(), key in any::<[u8; 32]>()) {
            let ids = PseudoIds::from_key_bytes(vec![key]).expect("keys");
            match ids.mint(k, &w) {
                Ok(id) => {
                    prop_assert!(crate::domain::valid_id(&id), "{}", id);
                    prop_assert_eq!(ids.open(&id), Ok((k, w.clone())));
                    // Deterministic: the same input, the same id.
                    prop_assert_eq!(ids.mint(k, &w), Ok(id));
                }
                Err(e) => prop_assert_eq!(e, PseudoIdError::TooLong),
            }
        }

        #[test]
        fn a_changed_character_is_refused(w in identity(), at in any::<prop::sample::Index>(), key in any::<[u8; 32]>()) {
            let ids = PseudoIds::from_key_bytes(vec![key]).expect("keys");
            if let Ok(id) = ids.mint(PseudoKind::Contact, &w) {
                let mut bytes = id.into_bytes();
                let i = CONTACT_PREFIX.len() + at.index(bytes.len() - CONTACT_PREFIX.len());
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                let tampered = String::from_utf8(bytes).expect("ascii");
                prop_assert!(ids.open(&tampered).is_err());
            }
        }

        #[test]
        fn another_key_is_refused(w in identity(), a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            let minting = PseudoIds::from_key_bytes(vec![a]).expect("keys");
            let other = PseudoIds::from_key_bytes(vec![b]).expect("keys");
            if let Ok(id) = minting.mint(PseudoKind::Contact, &w) {
                prop_assert_eq!(other.open(&id), Err(PseudoIdError::DoesNotVerify));
            }
        }

        #[test]
        fn different_identities_give_different_ids(a in "[0-9]{1,15}", b in "[0-9]{1,15}") {
            prop_assume!(a != b);
            let ids = keys(9);
            prop_assert_ne!(
                ids.mint(PseudoKind::Contact, &who(&a)).expect("mint"),
                ids.mint(PseudoKind::Contact, &who(&b)).expect("mint")
            );
        }
    }
}
