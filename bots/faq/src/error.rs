//! Errors loading an FAQ.

/// Why an FAQ could not be loaded. Each says where (a line of the TOML) and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaqError {
    /// The text is not valid TOML or does not have the FAQ's shape (a missing or misspelt field,
    /// a wrong type). The message shows the line and column.
    #[error("the FAQ is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// The FAQ text is larger than accepted.
    #[error("the FAQ is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The FAQ has more entries than accepted.
    #[error("the FAQ has {count} entries; at most {max} are accepted")]
    TooManyEntries {
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two entries share an id.
    #[error("line {line}: entry id {id:?} is already used by the entry at line {first_line}")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// The line of the second entry.
        line: usize,
        /// The line of the first entry with this id.
        first_line: usize,
    },
    /// An entry breaks a rule (empty, too long, too many questions, ...).
    #[error("line {line}: entry {id:?}: {problem}")]
    Entry {
        /// The entry's id (may be empty if that is the problem).
        id: String,
        /// The line where the entry starts.
        line: usize,
        /// What is wrong and the limit, if one.
        problem: String,
    },
    /// A top-level setting is out of range.
    #[error("{field}: {problem}")]
    Setting {
        /// The setting's name.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}
