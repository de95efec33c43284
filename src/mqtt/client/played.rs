//! A broker a unit test plays behind an [`Mqtt`] handle.

use tokio::sync::{mpsc, watch};

use super::{Command, Message, Mqtt, Received};

/// The broker's side of an [`Mqtt`] handle, played by a test: what the
/// handle is asked to do, and the connection state it reports. A real broker
/// cannot serve tests under tokio's paused clock: while the runtime waits on
/// a socket the clock jumps to the next timer, so every timeout fires at once.
pub(crate) struct PlayedBroker {
    commands: mpsc::UnboundedReceiver<Command>,
    /// What the handle's [`Mqtt::connected`] says; true at first.
    pub(crate) connected: watch::Sender<bool>,
}

/// What a handle asked of a [`PlayedBroker`].
pub(crate) enum Asked {
    Publish(Message),
    Subscribe(String, mpsc::Sender<Received>),
}

impl Mqtt {
    /// A connected handle whose broker is played by the test.
    pub(crate) fn played() -> (Self, PlayedBroker) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(true);
        (
            Self {
                commands,
                connected,
            },
            PlayedBroker {
                commands: commands_rx,
                connected: connected_tx,
            },
        )
    }
}

impl PlayedBroker {
    /// The next publish or subscription; None once every handle is dropped.
    /// A `close` is answered at once.
    pub(crate) async fn next(&mut self) -> Option<Asked> {
        loop {
            match self.commands.recv().await? {
                Command::Publish(m) => return Some(Asked::Publish(m)),
                Command::Subscribe(topic, to) => return Some(Asked::Subscribe(topic, to)),
                Command::Close(_, done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}
