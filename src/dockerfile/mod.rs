//! The Dockerfile language as BuildKit's Dockerfile frontend (1.x) implements it: parser
//! directives, line joining, heredocs, flags, each instruction's arguments, the shell-like
//! variable expansion, per-instruction validation, BuildKit's lint rules that need only the
//! parsed file, `EXPOSE` port specs, and `.dockerignore` patterns.
//!
//! This part is pure: it reads bytes it is given and does no I/O. It must not use any other part
//! of wcbuild. Parsing ([`parse`]) keeps the text as written; expansion is a separate step
//! ([`lexer::Lexer`], driven by the planner), and validation ([`check`]) is another, so that
//! `wcbuild dockerfile parse` shows what was written and `wcbuild dockerfile check` what is wrong.

pub mod check;
pub mod error;
pub mod expose;
pub mod ignore;
pub mod lexer;
pub mod lint;
pub mod parser;

pub use check::{Command, check};
pub use error::{Diagnostic, Location, ParseError, Severity, go_quote};
pub use lint::{LintConfig, LintOptions, LintWarning, Linter};
pub use parser::{Directives, Dockerfile, Heredoc, Instruction, parse};
