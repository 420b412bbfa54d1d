//! The embedded state store: one JSON file, written atomically (temporary file, fsync, rename,
//! fsync of the directory) with a schema version. An exclusive lock on a sibling `.lock` file
//! keeps a second responder from using the same state file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::envfile::{beside, dir_of};
use crate::failover::state::{self, State, SCHEMA_VERSION};
use crate::ports::{StateStore, StoreError, Versioned};

/// The file as written.
#[derive(Serialize)]
struct OnDisk<'a> {
    schema_version: u32,
    version: u64,
    state: &'a State,
}

/// The file as read: the body is decoded (and migrated) by [`state::decode`].
#[derive(Deserialize)]
struct Stored {
    schema_version: u64,
    version: u64,
    state: serde_json::Value,
}

pub struct FileStore {
    path: PathBuf,
    version: Mutex<u64>,
    _lock: File,
}

impl FileStore {
    /// Opens (and locks) the store at `path`, creating its directory if needed.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let dir = dir_of(path);
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let lock_path = beside(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Unavailable(format!("opening {}: {e}", lock_path.display()))
            })?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is locked by another process: only one responder may use a state file",
                lock_path.display()
            ))
        })?;
        Ok(FileStore {
            path: path.to_path_buf(),
            version: Mutex::new(0),
            _lock: lock,
        })
    }

    fn read(&self) -> Result<Option<Versioned>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading {}: {e}",
                    self.path.display()
                )))
            }
        };
        let disk: Stored = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Corrupt(format!(
                "{} is not a state file this version understands: {e}",
                self.path.display()
            ))
        })?;
        let state = state::decode(disk.schema_version, disk.state)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.path.display())))?;
        Ok(Some(Versioned {
            version: disk.version,
            state,
        }))
    }

    fn write(&self, disk: &OnDisk<'_>) -> Result<(), StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError::Unavailable(format!("{what}: {e}"));
        let tmp = beside(&self.path, ".tmp");
        let body = serde_json::to_vec_pretty(disk)
            .map_err(|e| StoreError::Corrupt(format!("encoding state: {e}")))?;
        {
            let mut f = File::create(&tmp).map_err(|e| io("creating temporary state file", e))?;
            f.write_all(&body).map_err(|e| io("writing state", e))?;
            f.sync_all().map_err(|e| io("syncing state", e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io("renaming state file", e))?;
        // The directory entry of the rename must reach the disk too; a bare file name lives in
        // the working directory.
        File::open(dir_of(&self.path))
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the state directory", e))?;
        Ok(())
    }
}

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Result<Option<Versioned>, StoreError> {
        let disk = self.read()?;
        let mut v = self.version.lock().unwrap_or_else(|p| p.into_inner());
        *v = disk.as_ref().map(|d| d.version).unwrap_or(0);
        Ok(disk)
    }

    async fn save(&self, state: &State, expected: u64) -> Result<u64, StoreError> {
        let mut v = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if *v != expected {
            return Err(StoreError::Conflict {
                expected,
                found: *v,
            });
        }
        let next = expected + 1;
        // Blocking file I/O under a std mutex: saves are serialised by the executor already and
        // take a few milliseconds; block_in_place keeps the runtime's other tasks moving.
        let disk = OnDisk {
            schema_version: SCHEMA_VERSION,
            version: next,
            state,
        };
        tokio::task::block_in_place(|| self.write(&disk))?;
        *v = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::machine::Policy;

    fn policy() -> Policy {
        Policy {
            regions: vec!["a".into(), "b".into()],
            min_interval_ms: 0,
            stabilisation_ms: 0,
            auto_failback: true,
            retry_backoff_ms: 0,
            live_check_cooldown_ms: 0,
            alert_expiry_ms: 1_200_000,
            agents: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_saved_state_loads_back_and_stale_versions_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = FileStore::open(&path).unwrap();
        assert!(store.load().await.unwrap().is_none());
        let s = State::initial(&policy(), 1000);
        assert_eq!(store.save(&s, 0).await.unwrap(), 1);
        assert!(matches!(
            store.save(&s, 0).await,
            Err(StoreError::Conflict {
                expected: 0,
                found: 1
            })
        ));
        drop(store);
        let store = FileStore::open(&path).unwrap();
        let got = store.load().await.unwrap().unwrap();
        assert_eq!(got.version, 1);
        assert_eq!(got.state, s);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_second_store_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let _first = FileStore::open(&path).unwrap();
        let err = FileStore::open(&path).err().expect("second open must fail");
        assert!(err.to_string().contains("locked"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_corrupt_or_future_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let store = FileStore::open(&path).unwrap();
        assert!(matches!(store.load().await, Err(StoreError::Corrupt(_))));
        std::fs::write(
            &path,
            r#"{"schema_version": 99, "version": 1, "state": null}"#,
        )
        .unwrap();
        let e = store.load().await.unwrap_err().to_string();
        assert!(e.contains("schema") || e.contains("understands"), "{e}");
    }
}
