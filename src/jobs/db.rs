//! The jobs' state in SQLite, in the data directory beside the files it
//! names (`files/<id>`). WAL with synchronous=NORMAL: a commit survives
//! the process being killed at any point. Every change a route reports is
//! committed first; an item's answer, the committed length of the file it
//! went to and the batch's counts change in one transaction.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::{now, BatchRecord, FileRecord, Status};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, purpose TEXT NOT NULL,
    filename TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, input_file_id TEXT NOT NULL,
    endpoint TEXT NOT NULL, model TEXT, metadata TEXT, status TEXT NOT NULL, errors TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, times TEXT NOT NULL DEFAULT '{}',
    output_file_id TEXT NOT NULL, error_file_id TEXT NOT NULL,
    output_published INTEGER NOT NULL DEFAULT 0, error_published INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    output_bytes INTEGER NOT NULL DEFAULT 0, error_bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS items (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, problem TEXT, done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line), UNIQUE (batch_id, custom_id));
";

/// An input line a batch has not answered yet: where it lies in the input
/// file, and why it cannot run when validation found that already.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub line: u64,
    pub custom_id: Option<String>,
    pub offset: u64,
    pub length: u64,
    pub problem: Option<String>,
}

/// The two files a batch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Output,
    Error,
}

pub struct JobStore {
    dir: PathBuf,
    conn: Mutex<Connection>,
}

impl JobStore {
    /// Opens (or makes) the store in `dir`.
    pub fn open(dir: &Path) -> Result<JobStore> {
        std::fs::create_dir_all(dir.join("files")).with_context(|| format!("cannot make the data directory {}", dir.display()))?;
        let path = dir.join("jobs.sqlite");
        let conn = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("cannot set up {}", path.display()))?;
        Ok(JobStore { dir: dir.to_path_buf(), conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a file's bytes are (an output file's from the batch's start).
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.dir.join("files").join(id)
    }

    /// A fresh place for an upload in progress, beside the files.
    pub fn upload_path(&self) -> PathBuf {
        self.dir.join("files").join(format!(".upload-{:016x}", crate::api::fields::fresh_seed()))
    }

    pub fn add_file(&self, f: &FileRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO files (id, purpose, filename, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![f.id, f.purpose, f.filename, f.bytes, f.created_at],
        )?;
        Ok(())
    }

    pub fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        Ok(self.conn().query_row("SELECT id, purpose, filename, bytes, created_at FROM files WHERE id = ?1", [id], file_row).optional()?)
    }

    /// A page of files (`limit` of them, past the file `after`), oldest or
    /// newest first, and whether more follow.
    pub fn files(&self, purpose: Option<&str>, after: Option<&str>, limit: usize, ascending: bool) -> Result<(Vec<FileRecord>, bool)> {
        let (cmp, order) = if ascending { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT id, purpose, filename, bytes, created_at FROM files
             WHERE (?1 IS NULL OR purpose = ?1) AND (?2 IS NULL OR seq {cmp} (SELECT seq FROM files WHERE id = ?2))
             ORDER BY seq {order} LIMIT ?3"
        );
        let conn = self.conn();
        let mut rows: Vec<FileRecord> =
            conn.prepare(&sql)?.query_map(params![purpose, after, limit as u64 + 1], file_row)?.collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// Forgets a file and removes its bytes; false if there is none.
    pub fn delete_file(&self, id: &str) -> Result<bool> {
        let gone = self.conn().execute("DELETE FROM files WHERE id = ?1", [id])? > 0;
        if gone {
            std::fs::remove_file(self.file_path(id)).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })?;
        }
        Ok(gone)
    }

    /// A batch still reading the file `id`, if one is.
    pub fn reader_of(&self, id: &str) -> Result<Option<String>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id, status FROM batches WHERE input_file_id = ?1")?;
        let batches: Vec<(String, String)> = q.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(batches.into_iter().find(|(_, s)| !Status::from_name(s).is_some_and(Status::is_final)).map(|(b, _)| b))
    }

    pub fn add_batch(&self, b: &BatchRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO batches (id, input_file_id, endpoint, metadata, status, created_at, expires_at, output_file_id, error_file_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                b.id,
                b.input_file_id,
                b.endpoint,
                b.metadata.as_ref().map(Value::to_string),
                b.status.name(),
                b.created_at,
                b.expires_at,
                b.output_id,
                b.error_id
            ],
        )?;
        Ok(())
    }

    pub fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1");
        Ok(self.conn().query_row(&sql, [id], batch_row).optional()?)
    }

    /// A page of batches, newest first, past the batch `after`, and
    /// whether more follow.
    pub fn batches(&self, after: Option<&str>, limit: usize) -> Result<(Vec<BatchRecord>, bool)> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE ?1 IS NULL OR seq < (SELECT seq FROM batches WHERE id = ?1)
             ORDER BY seq DESC LIMIT ?2"
        );
        let conn = self.conn();
        let mut rows: Vec<BatchRecord> =
            conn.prepare(&sql)?.query_map(params![after, limit as u64 + 1], batch_row)?.collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// The batches with work left, oldest first.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id, status FROM batches ORDER BY seq")?;
        let all: Vec<(String, String)> = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(all.into_iter().filter(|(_, s)| !Status::from_name(s).is_some_and(Status::is_final)).map(|(id, _)| id).collect())
    }

    /// Moves a batch to `to` if it is in one of `from`, noting when;
    /// whether it moved.
    pub fn advance(&self, id: &str, from: &[Status], to: Status) -> Result<bool> {
        let conn = self.conn();
        advance(&conn, id, from, to)
    }

    /// Records what validation found, in one transaction: every line as an
    /// item (unless it failed) and the batch in progress, or failed with
    /// `errors`. `lines` yields (line, custom_id, offset, length, problem);
    /// a custom_id met twice ends it with that id.
    pub fn validated<I>(&self, id: &str, model: &str, lines: I) -> Result<Result<u64, String>>
    where
        I: IntoIterator<Item = Result<(u64, Option<String>, u64, u64, Option<String>)>>,
    {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM items WHERE batch_id = ?1", [id])?;
        let mut total = 0;
        {
            let mut insert = tx.prepare(
                "INSERT INTO items (batch_id, line, custom_id, offset, length, problem) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (batch_id, custom_id) DO NOTHING",
            )?;
            for item in lines {
                let (line, custom_id, offset, length, problem) = item?;
                if insert.execute(params![id, line, custom_id, offset, length, problem])? == 0 {
                    return Ok(Err(custom_id.unwrap_or_default()));
                }
                total += 1;
            }
        }
        tx.execute("UPDATE batches SET total = ?2, model = ?3 WHERE id = ?1", params![id, total, model])?;
        advance(&tx, id, &[Status::Validating], Status::InProgress)?;
        tx.commit()?;
        Ok(Ok(total))
    }

    /// Fails a batch in validation with OpenAI's `errors.data` entries.
    pub fn invalid(&self, id: &str, errors: &Value) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("UPDATE batches SET errors = ?2 WHERE id = ?1", params![id, errors.to_string()])?;
        advance(&tx, id, &[Status::Validating], Status::Failed)?;
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` unanswered items past `after_line`, in input order.
    pub fn pending(&self, id: &str, after_line: u64, limit: usize) -> Result<Vec<PendingItem>> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT line, custom_id, offset, length, problem FROM items
             WHERE batch_id = ?1 AND line > ?2 AND done = 0 ORDER BY line LIMIT ?3",
        )?;
        let items = q.query_map(params![id, after_line, limit as u64], |r| {
            Ok(PendingItem { line: r.get(0)?, custom_id: r.get(1)?, offset: r.get(2)?, length: r.get(3)?, problem: r.get(4)? })
        })?;
        Ok(items.collect::<Result<_, _>>()?)
    }

    /// Commits an item's answer: its line now ends `sink` at `length` bytes.
    pub fn answered(&self, id: &str, line: u64, sink: Sink, length: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute("UPDATE items SET done = 1 WHERE batch_id = ?1 AND line = ?2 AND done = 0", params![id, line])? == 1 {
            let sql = match sink {
                Sink::Output => "UPDATE batches SET completed = completed + 1, output_bytes = ?2 WHERE id = ?1",
                Sink::Error => "UPDATE batches SET failed = failed + 1, error_bytes = ?2 WHERE id = ?1",
            };
            tx.execute(sql, params![id, length])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends a batch in `to` from one of `from`, listing the output and
    /// error files that hold lines; whether it moved.
    pub fn publish(&self, b: &BatchRecord, from: &[Status], to: Status) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !advance(&tx, &b.id, from, to)? {
            return Ok(false);
        }
        let at = now();
        for (file, bytes, name, flag) in
            [(&b.output_id, b.output_bytes, "output", "output_published"), (&b.error_id, b.error_bytes, "error", "error_published")]
        {
            if bytes > 0 {
                tx.execute(
                    "INSERT OR IGNORE INTO files (id, purpose, filename, bytes, created_at) VALUES (?1, 'batch_output', ?2, ?3, ?4)",
                    params![file, format!("{}_{name}.jsonl", b.id), bytes, at],
                )?;
                tx.execute(&format!("UPDATE batches SET {flag} = 1 WHERE id = ?1"), [&b.id])?;
            }
        }
        tx.execute("DELETE FROM items WHERE batch_id = ?1", [&b.id])?;
        tx.commit()?;
        Ok(true)
    }
}

fn advance(conn: &Connection, id: &str, from: &[Status], to: Status) -> Result<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.name()).collect();
    let from = serde_json::to_string(&from)?;
    let moved = conn.execute(
        "UPDATE batches SET status = ?2, times = json_set(times, '$.' || ?3, ?4)
         WHERE id = ?1 AND status IN (SELECT value FROM json_each(?5))",
        params![id, to.name(), to.time_field(), now(), from],
    )?;
    Ok(moved == 1)
}

fn file_row(r: &Row) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord { id: r.get(0)?, purpose: r.get(1)?, filename: r.get(2)?, bytes: r.get(3)?, created_at: r.get(4)? })
}

const BATCH_COLUMNS: &str = "id, input_file_id, endpoint, model, metadata, status, errors, created_at, expires_at, times,
    output_file_id, error_file_id, output_published, error_published, total, completed, failed, output_bytes, error_bytes";

fn batch_row(r: &Row) -> rusqlite::Result<BatchRecord> {
    let json = |i: usize| -> rusqlite::Result<Option<Value>> {
        let text: Option<String> = r.get(i)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let status: String = r.get(5)?;
    Ok(BatchRecord {
        id: r.get(0)?,
        input_file_id: r.get(1)?,
        endpoint: r.get(2)?,
        model: r.get(3)?,
        metadata: json(4)?,
        status: Status::from_name(&status).unwrap_or(Status::Failed),
        errors: json(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        times: json(9)?.and_then(|v| v.as_object().cloned()).unwrap_or_default(),
        output_id: r.get(10)?,
        error_id: r.get(11)?,
        output_published: r.get(12)?,
        error_published: r.get(13)?,
        total: r.get(14)?,
        completed: r.get(15)?,
        failed: r.get(16)?,
        output_bytes: r.get(17)?,
        error_bytes: r.get(18)?,
    })
}
