//! [`Dashboard`]: the broker side of an agent test, as an AWS SDK client
//! would see it.

use serde_json::{json, Value};

use crate::{aws, Mqtt};

/// An MQTT client using the AWS shadow topics, as a dashboard would.
#[derive(Debug)]
pub struct Dashboard {
    pub mqtt: Mqtt,
    next_token: u64,
}

impl Dashboard {
    /// Connects and subscribes to the replies of `get` and `update` of
    /// every thing.
    pub async fn connect(port: u16, id: &str) -> Dashboard {
        let mut mqtt = Mqtt::connect(port, id).await;
        mqtt.subscribe(&aws("+", "get/+")).await;
        mqtt.subscribe(&aws("+", "update/accepted")).await;
        mqtt.subscribe(&aws("+", "update/rejected")).await;
        Dashboard {
            mqtt,
            next_token: 0,
        }
    }

    fn token(&mut self) -> String {
        self.next_token += 1;
        format!("{}-{}", self.mqtt.id, self.next_token)
    }

    /// `$aws/things/THING/shadow/get`: the document, or `None` on 404.
    /// Polled faster than the broker's per-thing rate, a get is answered
    /// 429: like a real dashboard, it waits and asks again.
    pub async fn get(&mut self, thing: &str) -> Option<Value> {
        for _ in 0..50 {
            let token = self.token();
            let reply = self
                .mqtt
                .request(&aws(thing, "get"), &json!({ "clientToken": token }))
                .await;
            let body = reply.json();
            if reply.topic.ends_with("/accepted") {
                return Some(body);
            }
            if body["code"] == 429 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(body["code"], 404, "get {thing} was rejected: {reply}");
            return None;
        }
        panic!("get {thing} was answered 429 for 5 s");
    }

    /// [`Dashboard::get`] of many things at once: the requests are all
    /// published before the replies are awaited.
    pub async fn get_many(&mut self, things: &[&str]) -> Vec<Option<Value>> {
        let mut tokens = Vec::with_capacity(things.len());
        for thing in things {
            let token = self.token();
            self.mqtt
                .publish_json(&aws(thing, "get"), &json!({ "clientToken": token }))
                .await;
            tokens.push(token);
        }
        let mut docs = Vec::with_capacity(things.len());
        for (thing, token) in things.iter().zip(&tokens) {
            let reply = self.mqtt.reply(token).await;
            let body = reply.json();
            if reply.topic.ends_with("/accepted") {
                docs.push(Some(body));
            } else {
                assert_eq!(body["code"], 404, "get {thing} was rejected: {reply}");
                docs.push(None);
            }
        }
        docs
    }

    /// `$aws/things/THING/shadow/update` with `{"state": state}`; asserts it
    /// is accepted and returns the reply.
    pub async fn update(&mut self, thing: &str, state: Value) -> Value {
        let token = self.token();
        let reply = self
            .mqtt
            .request(
                &aws(thing, "update"),
                &json!({ "state": state, "clientToken": token }),
            )
            .await;
        assert!(
            reply.topic.ends_with("/accepted"),
            "update of {thing} was not accepted: {reply}"
        );
        reply.json()
    }

    /// [`Dashboard::update`] of many things: `window` requests are
    /// published before their replies are awaited (keep it well under the
    /// service's `limits.max_inflight_per_client`, 1,000 by default, past
    /// which requests are answered 429). Asserts each is accepted.
    pub async fn update_many(&mut self, updates: &[(String, Value)], window: usize) {
        for chunk in updates.chunks(window.max(1)) {
            let mut tokens = Vec::with_capacity(chunk.len());
            for (thing, state) in chunk {
                let token = self.token();
                let request = json!({ "state": state, "clientToken": token });
                self.mqtt
                    .publish_json(&aws(thing, "update"), &request)
                    .await;
                tokens.push(token);
            }
            for ((thing, _), token) in chunk.iter().zip(&tokens) {
                let reply = self.mqtt.reply(token).await;
                assert!(
                    reply.topic.ends_with("/accepted"),
                    "update of {thing} was not accepted: {reply}"
                );
            }
        }
    }
}
