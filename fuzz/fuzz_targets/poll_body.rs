//! The body of `POST /realtime/poll`, through the whole router and the
//! core: never a server error, always the protocol's bodies, and a 200
//! answer is a poll answer whose cursor is its last event's id. A poll
//! waits up to 30 s for an event, so a body that asks to wait (or leaves
//! the timeout to its default) is asked for `timeout: 0` instead: every
//! other field, and a timeout of the wrong type, is the fuzzer's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    let mut body = data.to_vec();
    if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(data) {
        let waits = match object.get("timeout") {
            None | Some(Value::Null) => true,
            Some(Value::Number(_)) => true,
            Some(_) => false,
        };
        if waits {
            object.insert("timeout".into(), Value::from(0));
            body = serde_json::to_vec(&object).unwrap();
        }
    }
    let h = harness();
    let (status, answer) = h.post("/realtime/poll", &h.user, body);
    if status == 200 {
        let events = answer["events"].as_array().expect("events");
        let cursor = answer["last_poll_id"].as_u64().expect("last_poll_id");
        if let Some(last) = events.last() {
            assert_eq!(last["id"].as_u64(), Some(cursor), "{answer}");
        }
        let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in increasing order: {ids:?}"
        );
    }
});
