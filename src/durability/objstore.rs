//! Where backups go: a local folder or an S3-compatible bucket (`s3://bucket/prefix`), both
//! through the `object_store` crate. S3 credentials, region and endpoint come from the standard
//! AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for another S3-compatible service, `AWS_ALLOW_HTTP=true`
//! for a plain-HTTP endpoint). The backup code is synchronous (SQLite, files); this wraps the
//! async store with a runtime handle, so call it from a blocking thread.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};

use crate::error::{Error, Result};

/// Objects over this size are uploaded in parts.
const SINGLE_PUT_MAX: u64 = 32 << 20;
const PART: usize = 16 << 20;

pub struct Target {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    /// What the target was opened from, for messages.
    pub url: String,
}

fn store_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { path, .. } => {
            Error::Invalid(format!("the backup target has no {path}"))
        }
        e => Error::Io(std::io::Error::other(format!("backup target: {e}"))),
    }
}

impl Target {
    /// `s3://bucket[/prefix]`, or a local folder (created if missing).
    pub fn open(url: &str, rt: tokio::runtime::Handle) -> Result<Target> {
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid("an S3 target is s3://bucket/prefix"));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::invalid(format!("S3 target {url}: {e}")))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else if url.contains("://") {
            return Err(Error::invalid(format!(
                "backup target {url:?}: give a folder or s3://bucket/prefix"
            )));
        } else {
            crate::perms::create_dir_all(Path::new(url))?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(url)
                    .map_err(|e| Error::invalid(format!("backup folder {url}: {e}")))?,
            )
        };
        Ok(Target {
            store,
            rt,
            url: url.to_string(),
        })
    }

    pub fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = ObjPath::from(key);
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map_err(store_error)?;
        Ok(())
    }

    /// Uploads a file (in parts when large).
    pub fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        let len = std::fs::metadata(file)?.len();
        if len <= SINGLE_PUT_MAX {
            return self.put_bytes(key, std::fs::read(file)?);
        }
        let path = ObjPath::from(key);
        let mut f = std::fs::File::open(file)?;
        self.rt.block_on(async {
            let upload = self.store.put_multipart(&path).await.map_err(store_error)?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(4).await.map_err(store_error)?;
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(store_error)?;
            Ok::<(), Error>(())
        })
    }

    pub fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let path = ObjPath::from(key);
        self.rt.block_on(async {
            let r = self.store.get(&path).await.map_err(store_error)?;
            Ok(r.bytes().await.map_err(store_error)?.to_vec())
        })
    }

    /// Downloads an object to a file, returning its SHA-256 and length.
    pub fn get_file(&self, key: &str, to: &Path) -> Result<(String, u64)> {
        use sha2::{Digest, Sha256};
        use std::io::Write;
        let path = ObjPath::from(key);
        let mut f = crate::perms::private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(to)?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        self.rt.block_on(async {
            let r = self.store.get(&path).await.map_err(store_error)?;
            let mut s = r.into_stream();
            while let Some(piece) = s.next().await {
                let piece = piece.map_err(store_error)?;
                h.update(&piece);
                f.write_all(&piece)?;
                n += piece.len() as u64;
            }
            Ok::<(), Error>(())
        })?;
        f.sync_all()?;
        Ok((hex::encode(h.finalize()), n))
    }

    /// The names (last path segment) of the objects under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<HashSet<String>> {
        let path = ObjPath::from(prefix);
        self.rt.block_on(async {
            let mut out = HashSet::new();
            let mut s = self.store.list(Some(&path));
            while let Some(m) = s.next().await {
                let m = m.map_err(store_error)?;
                if let Some(name) = m.location.filename() {
                    out.insert(name.to_string());
                }
            }
            Ok(out)
        })
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let path = ObjPath::from(key);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }
}
