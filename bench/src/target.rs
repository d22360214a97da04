//! What each server expects on the wire: the requests to subscribe, poll and
//! publish, and Switchyard's HS256 tokens. Requests are written by hand so the
//! client costs as little as possible per connection and per event.

use std::fmt;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::Common;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Switchyard,
    Nchan,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switchyard" => Ok(Kind::Switchyard),
            "nchan" => Ok(Kind::Nchan),
            _ => Err(format!("unknown target '{s}': use switchyard or nchan")),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Switchyard => "switchyard",
            Kind::Nchan => "nchan",
        })
    }
}

/// One server node: where to connect and what to put in `Host:`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
}

/// A target server (one or more nodes) and the requests it understands.
pub struct Target {
    pub kind: Kind,
    pub endpoints: Vec<Endpoint>,
    /// Subscribers avoid the first (publishing) node.
    pub cross_node: bool,
    pub channel: String,
    secret: String,
    service_token: String,
    /// Set by [`Target::open_group`]: publishes are messages of a group
    /// conversation instead of broadcasts.
    group: Option<Group>,
    /// Set by [`Target::spread`]: many channels, each subscriber following
    /// its own few of them.
    spread: Option<Spread>,
}

/// Switchyard's namespace for [`Target::spread`]: a resource namespace,
/// readable with a token whose `channels` claim matches.
const SPREAD_NAMESPACE: &str = "project";

/// Many channels and who follows which (`zipf`).
struct Spread {
    /// Channel names by index, as the server spells them.
    names: Vec<String>,
    /// Per subscriber, its channels as its request names them: Switchyard's
    /// `channels=` list, Nchan's multiplexed subscriber path (comma-separated
    /// either way).
    follows: Vec<String>,
}

/// A group conversation whose members send the run's messages in turn.
struct Group {
    id: String,
    /// One token per member, in member order.
    senders: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}

fn parse_url(url: &str) -> anyhow::Result<Endpoint> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs are supported: {url}"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() {
        bail!("no host in {url}");
    }
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("no IPv4 address for {host}"))?;
    Ok(Endpoint {
        addr,
        host: host.to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Target {
    pub fn new(common: &Common) -> anyhow::Result<Self> {
        let endpoints = common
            .urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let channel = match (&common.channel, common.target) {
            (Some(c), _) => c.clone(),
            (None, Kind::Switchyard) => "feed:bench".to_string(),
            // Nchan hands a new subscriber the channel's buffered messages
            // (oldest first): a fresh channel per run keeps earlier runs out.
            (None, Kind::Nchan) => {
                format!("bench{}x{}", unix_now() % 1_000_000, std::process::id())
            }
        };
        let mut this = Self {
            kind: common.target,
            endpoints,
            channel,
            secret: common.secret.clone(),
            service_token: String::new(),
            cross_node: common.cross_node && common.urls.len() > 1,
            group: None,
            spread: None,
        };
        this.service_token = this.token(r#""sub":"bench","role":"service""#)?;
        Ok(this)
    }

    /// An HS256 token with the given claims (JSON members) and a day to live.
    fn token(&self, claims: &str) -> anyhow::Result<String> {
        let json = format!("{{{claims},\"exp\":{}}}", unix_now() + 86_400);
        let value: serde_json::Value = serde_json::from_str(&json)?;
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &value,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?)
    }

    /// A client token for `sub` that may read `channels` (a pattern).
    pub fn client_token(&self, sub: &str, channels: &str) -> anyhow::Result<String> {
        let (sub, channels) = (
            serde_json::to_string(sub)?,
            serde_json::to_string(channels)?,
        );
        self.token(&format!(r#""sub":{sub},"channels":[{channels}]"#))
    }

    /// Creates a group conversation of `members` users named like the
    /// subscribers (`bench-{i}`), with a service token. From then on every
    /// publish is a message of it, sent by its members in turn, and every
    /// subscriber reads its inbox (a stream naming no channel), as a chat
    /// client does. Switchyard only.
    pub async fn open_group(&mut self, members: usize) -> anyhow::Result<()> {
        if self.kind != Kind::Switchyard {
            bail!("only Switchyard keeps conversations");
        }
        let names: Vec<String> = (0..members).map(|i| format!("bench-{i}")).collect();
        let url = format!("http://{}/realtime/conversations", self.endpoints[0].host);
        let opened: serde_json::Value = reqwest::Client::new()
            .post(url)
            .bearer_auth(&self.service_token)
            .json(&serde_json::json!({"type": "group", "title": "bench", "members": names}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = opened["id"]
            .as_str()
            .context("conversation id")?
            .to_string();
        let senders = names
            .iter()
            .map(|name| self.token(&format!("\"sub\":\"{name}\"")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.channel = String::new();
        self.group = Some(Group {
            id,
            senders,
            next: Default::default(),
        });
        Ok(())
    }

    /// Spreads the run over `channels` channels: subscriber `i` follows the
    /// channels `follows[i]` (indices), and publishes name their channel
    /// ([`Target::publish_request_on`]). Switchyard's are resource channels
    /// `project:c{k}` (subscribers get a token whose `channels` claim is
    /// `project:*`); Nchan's are `{channel}_{k}`, read with one multiplexed
    /// subscriber per stream (`/sub/multi/a,b,...`, a location run.sh adds).
    pub fn spread(&mut self, channels: usize, follows: &[Vec<u32>]) {
        let names: Vec<String> = (0..channels)
            .map(|k| match self.kind {
                Kind::Switchyard => format!("{SPREAD_NAMESPACE}:c{k}"),
                Kind::Nchan => format!("{}_{k}", self.channel),
            })
            .collect();
        let follows = follows
            .iter()
            .map(|list| {
                let list: Vec<&str> = list.iter().map(|&c| names[c as usize].as_str()).collect();
                list.join(",")
            })
            .collect();
        self.spread = Some(Spread { names, follows });
    }

    /// The endpoint subscriber `i` uses (round-robin over nodes).
    pub fn endpoint(&self, i: usize) -> &Endpoint {
        if self.cross_node {
            return &self.endpoints[1 + i % (self.endpoints.len() - 1)];
        }
        &self.endpoints[i % self.endpoints.len()]
    }

    /// Subscriber `i`'s token (Switchyard).
    pub fn subscriber_token(&self, i: usize) -> anyhow::Result<String> {
        self.token(&format!("\"sub\":\"bench-{i}\""))
    }

    /// `GET` opening an SSE stream for subscriber `i`, resuming after `last_id`.
    pub fn sse_request(&self, i: usize, last_id: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
        let ep = self.endpoint(i);
        let mut req = Vec::with_capacity(512);
        let follows = self.spread.as_ref().map(|s| s.follows[i].as_str());
        match self.kind {
            Kind::Switchyard => {
                let token = match follows {
                    Some(_) => {
                        self.client_token(&format!("bench-{i}"), &format!("{SPREAD_NAMESPACE}:*"))?
                    }
                    None => self.subscriber_token(i)?,
                };
                write!(
                    req,
                    "GET /realtime/sse?channels={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n",
                    follows.unwrap_or(&self.channel),
                    ep.host
                )?;
            }
            Kind::Nchan => write!(
                req,
                "GET /sub/{}{} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
                if follows.is_some() { "multi/" } else { "" },
                follows.unwrap_or(&self.channel),
                ep.host
            )?,
        }
        if let Some(id) = last_id {
            req.extend_from_slice(b"Last-Event-ID: ");
            req.extend_from_slice(id);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        Ok(req)
    }

    /// A long-poll request answered at once because an event waits.
    pub fn poll_request(&self, ep: &Endpoint) -> anyhow::Result<Vec<u8>> {
        let mut req = Vec::with_capacity(512);
        match self.kind {
            Kind::Switchyard => {
                let token = self.token(r#""sub":"bench-poll""#)?;
                write!(
                    req,
                    "GET /realtime/poll?channels={}&last_poll_id=0&timeout=0&limit=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
                    self.channel, ep.host
                )?;
            }
            // Without If-Modified-Since Nchan answers with the oldest
            // buffered message at once.
            Kind::Nchan => write!(
                req,
                "GET /sub/{} HTTP/1.1\r\nHost: {}\r\n\r\n",
                self.channel, ep.host
            )?,
        }
        Ok(req)
    }

    /// Writes a publish of one event with `data` (a JSON value) into `req`.
    pub fn publish_request(&self, ep: &Endpoint, data: &[u8], req: &mut Vec<u8>) {
        self.publish_request_on(ep, None, data, req);
    }

    /// [`Target::publish_request`] on channel `channel` of [`Target::spread`]
    /// (None: the run's one channel, or its group conversation).
    pub fn publish_request_on(
        &self,
        ep: &Endpoint,
        channel: Option<u32>,
        data: &[u8],
        req: &mut Vec<u8>,
    ) {
        req.clear();
        let channel = match (channel, &self.spread) {
            (Some(c), Some(s)) => s.names[c as usize].as_str(),
            _ => self.channel.as_str(),
        };
        if let Some(group) = &self.group {
            // The data travels as the message's content: a JSON string.
            let content = serde_json::to_string(&String::from_utf8_lossy(data)).unwrap_or_default();
            let body = format!("{{\"content\":{content}}}");
            let turn = group
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = write!(
                req,
                "POST /realtime/conversations/{}/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                group.id,
                ep.host,
                group.senders[turn % group.senders.len()],
                body.len()
            );
            return;
        }
        match self.kind {
            Kind::Switchyard => {
                let prefix = format!("{{\"channel\":\"{channel}\",\"event\":\"bench\",\"data\":");
                let len = prefix.len() + data.len() + 1;
                let _ = write!(
                    req,
                    "POST /realtime/broadcast HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{prefix}",
                    ep.host, self.service_token
                );
                req.extend_from_slice(data);
                req.push(b'}');
            }
            Kind::Nchan => {
                let _ = write!(
                    req,
                    "POST /pub/{channel} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    ep.host,
                    data.len()
                );
                req.extend_from_slice(data);
            }
        }
    }

    /// Writes a Switchyard batch publish (`{"events":[...]}`) into `req`.
    pub fn batch_request(&self, ep: &Endpoint, datas: &[Vec<u8>], req: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(datas.iter().map(|d| d.len() + 64).sum());
        body.extend_from_slice(b"{\"events\":[");
        for (k, data) in datas.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            let _ = write!(
                body,
                "{{\"channel\":\"{}\",\"event\":\"bench\",\"data\":",
                self.channel
            );
            body.extend_from_slice(data);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        req.clear();
        let _ = write!(
            req,
            "POST /realtime/broadcast HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            ep.host,
            self.service_token,
            body.len()
        );
        req.extend_from_slice(&body);
    }
}

/// The data of a benchmark event: its sequence number, the step of the run it
/// belongs to and its scheduled send time (ns since the tool's start).
pub fn event_data(seq: u64, step: u32, t_ns: u64, pad: usize, out: &mut Vec<u8>) {
    out.clear();
    let _ = write!(out, "{{\"seq\":{seq},\"step\":{step},\"t\":{t_ns}");
    if pad > 0 {
        out.extend_from_slice(b",\"pad\":\"");
        out.extend(std::iter::repeat_n(b'x', pad));
        out.push(b'"');
    }
    out.push(b'}');
}
