//! A replay server for tests of MongoDB clients: it listens on 127.0.0.1,
//! reads real OP_MSG requests, records them, and answers each command with a
//! reply chosen from a [`Script`] of replies recorded from real mongod shapes
//! (see [`recorded`] for where each shape comes from).
//!
//! It is **not** a MongoDB and not a fake mongod: it keeps no data, runs no
//! elections and knows nothing of replication. A test against it pins what a
//! client sends and how the client reads the answers a real server gives; it
//! never shows how a mongod behaves, and no test using it is a test of
//! MongoDB.
//!
//! Scripts can change their answers: per command, a sequence (the n-th
//! request gets the n-th answer, the last one repeats), and per [`Phase`], a
//! counter that several servers share and that a chosen command moves on
//! (e.g. after `replSetStepDown` on one server, another one answers as the
//! primary). An [`Answer::Close`] drops the connection instead of answering.
//! A command the script does not know gets mongod's `CommandNotFound` (59).
//! The server stops accepting when the [`Replay`] is dropped.

pub mod recorded;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bson::Document;

use crate::wire;

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Reply(Document),
    /// Close the connection without answering.
    Close,
}

/// A counter shared by servers; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Phase(Arc<AtomicUsize>);

impl Phase {
    pub fn new() -> Phase {
        Phase::default()
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Rule {
    command: String,
    /// Only in this phase; `None`: in any phase without a rule of its own.
    phase: Option<usize>,
    answers: Vec<Answer>,
    served: AtomicUsize,
}

/// The answers of one server.
#[derive(Debug, Default)]
pub struct Script {
    rules: Vec<Rule>,
    phase: Phase,
    advances_on: Vec<String>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Answer `command` with `reply`, always.
    pub fn reply(self, command: &str, reply: Document) -> Script {
        self.sequence(command, vec![Answer::Reply(reply)])
    }

    /// Answer the n-th `command` with `answers[n]`; the last one repeats.
    pub fn sequence(mut self, command: &str, answers: Vec<Answer>) -> Script {
        self.rules.push(Rule {
            command: command.to_string(),
            phase: None,
            answers,
            served: AtomicUsize::new(0),
        });
        self
    }

    /// Close the connection on `command`, always.
    pub fn close(self, command: &str) -> Script {
        self.sequence(command, vec![Answer::Close])
    }

    /// While the shared phase is `phase`, answer `command` with `answers`
    /// in sequence, the last one repeating (before any rule without a phase).
    pub fn in_phase(mut self, phase: usize, command: &str, answers: Vec<Answer>) -> Script {
        self.rules.push(Rule {
            command: command.to_string(),
            phase: Some(phase),
            answers,
            served: AtomicUsize::new(0),
        });
        self
    }

    /// Share `phase` with other servers.
    pub fn phase(mut self, phase: &Phase) -> Script {
        self.phase = phase.clone();
        self
    }

    /// Receiving `command` moves the phase on (before the answer goes out,
    /// so whoever hears the answer sees the new phase everywhere).
    pub fn advances(mut self, command: &str) -> Script {
        self.advances_on.push(command.to_string());
        self
    }

    fn answer(&self, command: &str) -> Answer {
        if self.advances_on.iter().any(|c| c == command) {
            self.phase.advance();
        }
        let now = self.phase.get();
        let rule = self
            .rules
            .iter()
            .find(|r| r.command == command && r.phase == Some(now))
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| r.command == command && r.phase.is_none())
            });
        match rule {
            Some(r) if !r.answers.is_empty() => {
                let n = r.served.fetch_add(1, Ordering::SeqCst);
                r.answers[n.min(r.answers.len() - 1)].clone()
            }
            _ => Answer::Reply(recorded::command_not_found(command)),
        }
    }
}

/// One request as the server read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The client's address (shows the source address it bound).
    pub peer: SocketAddr,
    /// The command document, `$db` included.
    pub body: Document,
}

impl Request {
    /// The command's name: the body's first key.
    pub fn command(&self) -> &str {
        self.body.keys().next().map(String::as_str).unwrap_or("")
    }
}

/// A running replay server; dropping it stops the listener.
pub struct Replay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Replay {
    /// Listen on an ephemeral port of 127.0.0.1 and answer by `script`.
    pub fn start(script: Script) -> std::io::Result<Replay> {
        Replay::start_on(TcpListener::bind("127.0.0.1:0")?, script)
    }

    /// Answer by `script` on a listener the caller bound (e.g. inside a network namespace).
    pub fn start_on(listener: TcpListener, script: Script) -> std::io::Result<Replay> {
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let (rec, halt) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(format!("replay-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if halt.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { return };
                    let (rec, script) = (Arc::clone(&rec), Arc::clone(&script));
                    std::thread::spawn(move || serve(conn, &rec, &script));
                }
            })?;
        Ok(Replay { addr, seen, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The command names of every request so far.
    pub fn commands(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r.command().to_string())
            .collect()
    }

    /// The first request of `command`, if any.
    pub fn request(&self, command: &str) -> Option<Document> {
        self.requests()
            .into_iter()
            .find(|r| r.command() == command)
            .map(|r| r.body)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut conn: TcpStream, rec: &Mutex<Vec<Request>>, script: &Script) {
    let Ok(peer) = conn.peer_addr() else { return };
    loop {
        let mut head = [0u8; 4];
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        let len = i32::from_le_bytes(head);
        if len < 21 || len as usize > wire::MAX_MESSAGE {
            return;
        }
        let mut buf = vec![0u8; len as usize];
        buf[..4].copy_from_slice(&head);
        if conn.read_exact(&mut buf[4..]).is_err() {
            return;
        }
        // Not OP_MSG: a real server would close too.
        let Ok(msg) = wire::decode(&buf) else { return };
        let req = Request {
            peer,
            body: msg.body,
        };
        let name = req.command().to_string();
        if let Ok(mut seen) = rec.lock() {
            seen.push(req);
        }
        let reply = match script.answer(&name) {
            Answer::Reply(d) => d,
            Answer::Close => return,
        };
        let Ok(bytes) =
            wire::encode_reply(msg.request_id.wrapping_add(1000), msg.request_id, &reply)
        else {
            return;
        };
        if conn.write_all(&bytes).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Conn;
    use bson::doc;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn sequences_repeat_their_last_answer_and_unknown_commands_are_refused() {
        let r = Replay::start(Script::new().sequence(
            "ping",
            vec![
                Answer::Reply(doc! {"ok": 1.0, "n": 1}),
                Answer::Reply(doc! {"ok": 1.0, "n": 2}),
            ],
        ))
        .unwrap();
        let mut c = Conn::connect(r.addr(), T).unwrap();
        let n: Vec<i32> = (0..3)
            .map(|_| c.command(&doc! {"ping": 1}).unwrap().get_i32("n").unwrap())
            .collect();
        assert_eq!(n, [1, 2, 2]);
        let e = c.command(&doc! {"shutdown": 1}).unwrap();
        assert_eq!(
            wire::error_of(&e),
            (
                59,
                "CommandNotFound".into(),
                "no such command: 'shutdown'".into()
            )
        );
        assert_eq!(r.commands(), ["ping", "ping", "ping", "shutdown"]);
        assert_eq!(r.requests()[0].peer.ip(), c.addr().ip());
    }

    #[test]
    fn a_shared_phase_changes_another_servers_answers() {
        let phase = Phase::new();
        let a = Replay::start(
            Script::new()
                .reply("stepDown", doc! {"ok": 1.0})
                .advances("stepDown")
                .phase(&phase),
        )
        .unwrap();
        let b = Replay::start(
            Script::new()
                .reply("who", doc! {"ok": 1.0, "primary": false})
                .in_phase(
                    1,
                    "who",
                    vec![Answer::Reply(doc! {"ok": 1.0, "primary": true})],
                )
                .phase(&phase),
        )
        .unwrap();
        let who = || {
            Conn::connect(b.addr(), T)
                .unwrap()
                .command(&doc! {"who": 1})
                .unwrap()
                .get_bool("primary")
                .unwrap()
        };
        assert!(!who());
        Conn::connect(a.addr(), T)
            .unwrap()
            .command(&doc! {"stepDown": 1})
            .unwrap();
        assert!(who());
    }

    #[test]
    fn close_drops_the_connection_unanswered() {
        let r = Replay::start(Script::new().close("bye")).unwrap();
        let mut c = Conn::connect(r.addr(), T).unwrap();
        let e = c.command(&doc! {"bye": 1}).unwrap_err();
        assert!(e.closed_by_peer(), "{e}");
    }
}
