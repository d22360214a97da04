//! The body of `POST /realtime/publish` (a user with publish claims) and
//! `POST /realtime/broadcast` (a service token), through the whole router
//! and the core to storage: never a server error, always the protocol's
//! bodies, and a 202 receipt names the ids it appended.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let (path, token) = if which & 1 == 0 {
        ("/realtime/publish", &h.user)
    } else {
        ("/realtime/broadcast", &h.service)
    };
    let (status, answer) = h.post(path, token, body.to_vec());
    if status == 202 {
        assert_eq!(answer["status"], "sent", "{answer}");
        let ids = answer["ids"].as_array().expect("ids");
        assert!(!ids.is_empty(), "{answer}");
        assert_eq!(ids.last(), Some(&answer["id"]), "{answer}");
    }
});
