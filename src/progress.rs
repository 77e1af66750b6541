//! Progress events: the parts report what they do through [`Reporter`]; only `cli` draws them
//! (plain lines, JSON lines, or nothing).

/// Something a build did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stage starts.
    Stage {
        /// Position in the Dockerfile.
        index: usize,
        /// `AS` name.
        name: Option<String>,
        /// What it is built on.
        base: String,
        /// Its platform.
        platform: String,
    },
    /// A step starts.
    StepStart {
        /// Stage index.
        stage: usize,
        /// Dockerfile line.
        line: usize,
        /// The instruction, expanded.
        text: String,
    },
    /// Bytes packed into the current step's layer so far.
    Packing {
        /// Stage index.
        stage: usize,
        /// Bytes of file content written.
        done: u64,
        /// Bytes of file content the step writes in all.
        total: u64,
    },
    /// A line a step's process wrote (RUN), as it comes; its trailing newline removed.
    Output {
        /// Stage index.
        stage: usize,
        /// True for standard error.
        stderr: bool,
        /// The line (invalid UTF-8 replaced).
        line: String,
    },
    /// Something the build wants the user to know about a step (the runtime chosen, a
    /// fallback taken, the isolation decided).
    Note {
        /// Stage index.
        stage: usize,
        /// What.
        text: String,
    },
    /// A step finished.
    Step {
        /// Stage index.
        stage: usize,
        /// Dockerfile line.
        line: usize,
        /// The instruction as carried out.
        text: String,
        /// True when it made a layer.
        layer: bool,
        /// True when the layer came from the build cache.
        cached: bool,
    },
    /// A blob moving to or from a registry.
    Transfer {
        /// `pull` or `push`.
        action: &'static str,
        /// The blob.
        digest: String,
        /// What kind of blob (`layer`, `config`, `manifest`).
        kind: &'static str,
        /// Bytes moved so far.
        done: u64,
        /// The blob's size.
        total: u64,
        /// What happened.
        state: TransferState,
    },
}

/// What happened to a blob in a pull or push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// The transfer starts.
    Started,
    /// Bytes moved so far (`done`).
    Progress,
    /// Nothing to move: the destination had it.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// A foreign layer left out of a push.
    Skipped,
    /// Finished.
    Done,
}

/// Receives progress events.
pub trait Reporter {
    /// One event.
    fn event(&mut self, event: Event);
}

/// Drops every event.
pub struct Silent;

impl Reporter for Silent {
    fn event(&mut self, _event: Event) {}
}

impl<F: FnMut(Event)> Reporter for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}
