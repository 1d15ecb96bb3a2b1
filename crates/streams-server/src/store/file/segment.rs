//! A stream's segment file: one self-checking record per append.
//!
//! Everything an append changes — its bytes, the producer tuple it carries, its `Stream-Seq`,
//! whether it closes the stream — is one record, written with one `pwrite` and made durable by
//! one `fdatasync`. So producer state can never run ahead of or behind the data it guards, and
//! recovery is a scan: replay records until the first one that is incomplete or fails its
//! checksum. The file is preallocated ahead of its records ([`preallocate`]), so it may end in
//! zeros: a zero length is not a record, and the scan stops.
//!
//! What follows the first bad record decides what it is. Each record carries `handed`: how many
//! bytes of the file had been handed to it before the record was appended. Flushes are written
//! and synced one at a time, so every byte below a record's `handed` was synced before that
//! record was even written. A whole record further on whose `handed` lies beyond the bad one
//! therefore proves the bad one was durable — acknowledged data since damaged — and the segment
//! is refused, untouched ([`Damaged`]). Without such a proof the bad bytes are the torn tail of
//! the last flush (its pages may reach the disk in any order), and the file is cut there.
//!
//! Record layout (little-endian):
//!
//! ```text
//! u32 body_len | u32 crc32(body) | body:
//!   u8 flags (1 closes, 2 producer, 4 seq, 8 handed) | u8[3] zero | u32 message_count
//!   u64 written_at_ms
//!   [u64 handed]                                 if flags & 8
//!   [u16 id_len | id | u64 epoch | u64 seq]      if flags & 2
//!   [u16 seq_len | seq]                          if flags & 4
//!   [u32 message_len × message_count]            if message_count > 1
//!   data
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::disk::{Disk, DiskFile};
use super::preallocate;
use crate::producer::ProducerTuple;

const PREFIX: usize = 8;
const FIXED: usize = 16;
const CLOSES: u8 = 1;
const HAS_PRODUCER: u8 = 2;
const HAS_SEQ: u8 = 4;
const HAS_HANDED: u8 = 8;

/// One append as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub closes: bool,
    pub producer: Option<ProducerTuple>,
    pub seq: Option<String>,
    pub written_at_ms: u64,
    /// Length of each message in `data`, in order.
    pub message_lens: Vec<u32>,
    pub data: Vec<u8>,
}

impl Record {
    /// The record's bytes on disk, appended after the file's first `handed` bytes were handed to
    /// it, with `data_offset` — where its data starts within them.
    pub fn encode(&self, handed: u64) -> (Vec<u8>, usize) {
        let mut body = Vec::with_capacity(FIXED + 72 + self.data.len());
        let mut flags = HAS_HANDED;
        if self.closes {
            flags |= CLOSES;
        }
        if self.producer.is_some() {
            flags |= HAS_PRODUCER;
        }
        if self.seq.is_some() {
            flags |= HAS_SEQ;
        }
        body.extend_from_slice(&[flags, 0, 0, 0]);
        body.extend_from_slice(&(self.message_lens.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.written_at_ms.to_le_bytes());
        body.extend_from_slice(&handed.to_le_bytes());
        if let Some(producer) = &self.producer {
            put_text(&mut body, &producer.id);
            body.extend_from_slice(&producer.epoch.to_le_bytes());
            body.extend_from_slice(&producer.seq.to_le_bytes());
        }
        if let Some(seq) = &self.seq {
            put_text(&mut body, seq);
        }
        if self.message_lens.len() > 1 {
            for len in &self.message_lens {
                body.extend_from_slice(&len.to_le_bytes());
            }
        }
        let data_offset = PREFIX + body.len();
        body.extend_from_slice(&self.data);
        let mut out = Vec::with_capacity(PREFIX + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        (out, data_offset)
    }

    /// Decodes the record at the start of `bytes`; `None` if it is incomplete or damaged.
    pub fn decode(bytes: &[u8]) -> Option<Decoded> {
        let body_len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        let body = bytes.get(PREFIX..PREFIX + body_len)?;
        if body_len < FIXED || crc32fast::hash(body) != crc {
            return None;
        }
        let mut cursor = Cursor { bytes: body, at: 0 };
        let flags = cursor.take(4)?[0];
        let count = cursor.u32()? as usize;
        let written_at_ms = cursor.u64()?;
        let handed = if flags & HAS_HANDED != 0 {
            Some(cursor.u64()?)
        } else {
            None
        };
        let producer = if flags & HAS_PRODUCER != 0 {
            Some(ProducerTuple {
                id: cursor.text()?,
                epoch: cursor.u64()?,
                seq: cursor.u64()?,
            })
        } else {
            None
        };
        let seq = if flags & HAS_SEQ != 0 {
            Some(cursor.text()?)
        } else {
            None
        };
        let mut message_lens = Vec::with_capacity(count);
        if count > 1 {
            for _ in 0..count {
                message_lens.push(cursor.u32()?);
            }
        }
        let data_start = cursor.at;
        let data = body[data_start..].to_vec();
        if count == 1 {
            message_lens.push(u32::try_from(data.len()).ok()?);
        }
        if message_lens.iter().map(|&len| len as usize).sum::<usize>() != data.len() {
            return None;
        }
        let record = Record {
            closes: flags & CLOSES != 0,
            producer,
            seq,
            written_at_ms,
            message_lens,
            data,
        };
        Some(Decoded {
            record,
            len: PREFIX + body_len,
            data_offset: PREFIX + data_start,
            handed,
        })
    }
}

/// A record read back, with where it sits in its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub record: Record,
    /// The record's length on disk.
    pub len: usize,
    /// Where its data starts within it.
    pub data_offset: usize,
    /// File bytes handed to the file before it was appended (absent in older records).
    pub handed: Option<u64>,
}

/// A segment whose damage lies before its tail: acknowledged records follow the bad one.
#[derive(Debug, thiserror::Error)]
#[error(
    "the record at byte {at} is damaged, but the whole record at byte {proof} was written after \
     it was durable: acknowledged data is damaged, so the file was left as it is"
)]
pub struct Damaged {
    /// Where the first bad record starts.
    pub at: u64,
    /// A later whole record that proves the bad one had been synced.
    pub proof: u64,
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Where one record's data lives.
#[derive(Clone, Copy, Debug)]
struct Extent {
    /// Stream offset of the record's first byte.
    start: u64,
    /// File position of the record's first data byte.
    pos: u64,
    len: u64,
}

/// An open segment file and the index of its records.
///
/// Appends are buffered: [`Segment::append`] only encodes the record into `pending`, and the
/// group syncer writes everything pending with one `pwrite` before its `fdatasync`
/// ([`Segment::take_pending`]). So a burst of appends costs one write and one sync, not one write
/// each; nothing pending is ever readable, since readers only see what a sync made durable.
#[derive(Debug)]
pub struct Segment {
    file: Arc<dyn DiskFile>,
    /// Bytes appended, pending ones included.
    len: u64,
    /// Bytes handed to the file.
    flushed: u64,
    /// The file's length: its records, then reserved zeros.
    allocated: u64,
    pending: Vec<u8>,
    extents: Vec<Extent>,
}

/// Pending bytes and where they go: the write (and sync) a group syncer performs.
#[derive(Debug)]
pub struct Flush {
    file: Arc<dyn DiskFile>,
    at: u64,
    bytes: Vec<u8>,
    /// Space to reserve first, `(from, to)`, when the bytes would not fit.
    reserve: Option<(u64, u64)>,
}

impl Flush {
    /// Writes the bytes, then makes the file durable up to their end.
    pub fn write_and_sync(self) -> io::Result<()> {
        if let Some((from, to)) = self.reserve {
            self.file.reserve(from, to)?;
        }
        if !self.bytes.is_empty() {
            self.file.write_at(&self.bytes, self.at)?;
        }
        self.file.sync_data()
    }
}

/// The bytes of a stream range, to be read from a segment without holding the stream's lock.
#[derive(Debug)]
pub struct ReadPlan {
    file: Arc<dyn DiskFile>,
    /// File span covering every record in the range.
    span: (u64, u64),
    /// Pieces to keep, relative to the span.
    pieces: Vec<(usize, usize)>,
}

impl Segment {
    /// Creates an empty segment at `path` (which must not exist).
    pub fn create(disk: &dyn Disk, path: &Path) -> io::Result<Segment> {
        Ok(Segment {
            file: disk.create_new(path)?,
            len: 0,
            flushed: 0,
            allocated: 0,
            pending: Vec::new(),
            extents: Vec::new(),
        })
    }

    /// Opens an existing segment, replays its whole records and cuts off a torn tail (keeping
    /// reserved zeros). Damage before the tail is refused with a [`Damaged`] error
    /// (`InvalidData`), leaving the file as it is.
    pub fn recover(
        disk: &dyn Disk,
        path: &Path,
        mut replay: impl FnMut(&Record),
    ) -> io::Result<(Segment, u64)> {
        let file = disk.open(path)?;
        let mut bytes = vec![0; usize::try_from(file.size()?).map_err(io::Error::other)?];
        file.read_at(&mut bytes, 0)?;
        let mut extents = Vec::new();
        let mut records = Vec::new();
        let mut stream_len = 0u64;
        let mut at = 0usize;
        while let Some(decoded) = Record::decode(&bytes[at..]) {
            extents.push(Extent {
                start: stream_len,
                pos: (at + decoded.data_offset) as u64,
                len: decoded.record.data.len() as u64,
            });
            stream_len += decoded.record.data.len() as u64;
            at += decoded.len;
            records.push(decoded.record);
        }
        let torn = bytes[at..].iter().any(|&byte| byte != 0);
        if torn && let Some(proof) = proof_of_damage(&bytes, at) {
            let damaged = Damaged { at: at as u64, proof };
            return Err(io::Error::new(io::ErrorKind::InvalidData, damaged));
        }
        records.iter().for_each(&mut replay);
        let mut segment = Segment {
            file,
            len: at as u64,
            flushed: at as u64,
            allocated: bytes.len() as u64,
            pending: Vec::new(),
            extents,
        };
        if torn {
            segment.allocated = at as u64;
            tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "cutting a torn tail");
            segment.file.set_len(at as u64)?;
            segment.file.sync_all()?;
        }
        Ok((segment, stream_len))
    }

    /// File bytes appended so far (pending, written or durable).
    pub fn written(&self) -> u64 {
        self.len
    }

    /// Appends a record holding stream bytes from `start` to the pending bytes.
    pub fn append(&mut self, record: &Record, start: u64) {
        let (bytes, data_offset) = record.encode(self.flushed);
        self.extents.push(Extent {
            start,
            pos: self.len + data_offset as u64,
            len: record.data.len() as u64,
        });
        self.len += bytes.len() as u64;
        self.pending.extend_from_slice(&bytes);
    }

    /// Hands over everything pending, to be written and synced (by one syncer at a time, so
    /// flushes land in order).
    pub fn take_pending(&mut self) -> Flush {
        let at = self.flushed;
        self.flushed = self.len;
        let reserve = (self.len > self.allocated).then(|| {
            let from = self.allocated;
            self.allocated = preallocate::next_len(from, self.len);
            (from, self.allocated)
        });
        Flush {
            file: self.file.clone(),
            at,
            bytes: std::mem::take(&mut self.pending),
            reserve,
        }
    }

    /// Cuts the segment back to its first `durable` bytes — the records every acknowledged
    /// append is in — after a failed write or sync: pending and unsynced records are dropped and
    /// the file is cut and synced (`fsync`, for its length). After a failed `fdatasync` the
    /// kernel's copy of what follows is unknown; the prefix was synced before and is not. Until
    /// this succeeds nothing more may be written.
    pub fn cut_back(&mut self, durable: u64) -> io::Result<()> {
        self.pending.clear();
        self.len = durable;
        self.flushed = durable;
        let kept = self.extents.partition_point(|e| e.pos < durable);
        self.extents.truncate(kept);
        self.allocated = durable;
        self.file.set_len(durable)?;
        self.file.sync_all()
    }

    /// A plan to read stream bytes `[from, to)`, which must lie within written records.
    pub fn plan(&self, from: u64, to: u64) -> ReadPlan {
        let first = self.extents.partition_point(|e| e.start + e.len <= from);
        let mut pieces = Vec::new();
        let mut span = (0, 0);
        for extent in self.extents[first..].iter().take_while(|e| e.start < to) {
            let lo = from.max(extent.start) - extent.start;
            let hi = to.min(extent.start + extent.len) - extent.start;
            if pieces.is_empty() {
                span.0 = extent.pos + lo;
            }
            span.1 = extent.pos + hi;
            pieces.push(((extent.pos + lo - span.0) as usize, (hi - lo) as usize));
        }
        ReadPlan {
            file: self.file.clone(),
            span,
            pieces,
        }
    }
}

impl ReadPlan {
    /// Reads the planned bytes into `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let (lo, hi) = self.span;
        if self.pieces.len() == 1 {
            let start = out.len();
            out.resize(start + (hi - lo) as usize, 0);
            return self.file.read_at(&mut out[start..], lo);
        }
        let mut span = vec![0; (hi - lo) as usize];
        self.file.read_at(&mut span, lo)?;
        for &(at, len) in &self.pieces {
            out.extend_from_slice(&span[at..at + len]);
        }
        Ok(())
    }
}

/// Where, after a bad record at `bad`, a whole record shows the bad bytes had been synced: its
/// `handed` lies beyond them. Records without `handed` (written before it existed) prove it too.
fn proof_of_damage(bytes: &[u8], bad: usize) -> Option<u64> {
    (bad + 1..=bytes.len().saturating_sub(PREFIX + FIXED)).find_map(|at| {
        let decoded = Record::decode(&bytes[at..])?;
        decoded
            .handed
            .is_none_or(|handed| handed > bad as u64)
            .then_some(at as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::disk::RealDisk;

    fn record(data: &[u8], lens: &[u32]) -> Record {
        Record {
            closes: false,
            producer: Some(ProducerTuple {
                id: "w".into(),
                epoch: 1,
                seq: 9,
            }),
            seq: Some("0009".into()),
            written_at_ms: 42,
            message_lens: lens.to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let original = record(b"1,22,", &[2, 3]);
        let (bytes, data_offset) = original.encode(77);
        let decoded = Record::decode(&bytes).expect("whole record");
        let expected = Decoded {
            record: original,
            len: bytes.len(),
            data_offset,
            handed: Some(77),
        };
        assert_eq!(decoded, expected);
        assert!(Record::decode(&bytes[..bytes.len() - 1]).is_none(), "torn");
        let mut flipped = bytes.clone();
        flipped[data_offset] ^= 1;
        assert!(Record::decode(&flipped).is_none(), "corrupt");
    }

    #[test]
    fn recovery_keeps_whole_records_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.seg");
        let mut segment = Segment::create(&RealDisk, &path).expect("create");
        segment.append(&record(b"hello", &[5]), 0);
        segment.append(&record(b"world!", &[6]), 5);
        segment.take_pending().write_and_sync().expect("write");
        let whole = segment.written();
        let (torn, _) = record(b"lost", &[4]).encode(whole);
        segment
            .file
            .write_at(&torn[..torn.len() - 2], whole)
            .expect("torn write");

        let mut replayed = Vec::new();
        let (recovered, stream_len) =
            Segment::recover(&RealDisk, &path, |r| replayed.push(r.data.clone())).expect("recover");
        assert_eq!(stream_len, 11);
        assert_eq!(replayed, [b"hello".to_vec(), b"world!".to_vec()]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole);

        let mut out = Vec::new();
        recovered.plan(3, 8).read_into(&mut out).expect("read");
        assert_eq!(out, b"lowor");
    }

    #[test]
    fn reserved_zeros_are_kept_and_the_next_record_goes_after_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.seg");
        let mut segment = Segment::create(&RealDisk, &path).expect("create");
        segment.append(&record(b"hello", &[5]), 0);
        segment.take_pending().write_and_sync().expect("write");
        let whole = segment.written();
        let reserved = std::fs::metadata(&path).expect("meta").len();
        assert!(reserved > whole, "space is reserved ahead: {reserved} > {whole}");

        let (mut recovered, stream_len) = Segment::recover(&RealDisk, &path, |_| {}).expect("recover");
        assert_eq!((stream_len, recovered.written()), (5, whole));
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            reserved,
            "zeros kept"
        );
        recovered.append(&record(b"world", &[5]), 5);
        let flush = recovered.take_pending();
        assert!(flush.reserve.is_none(), "the reserved space is used first");
        flush.write_and_sync().expect("write");

        let mut replayed = Vec::new();
        let (again, stream_len) =
            Segment::recover(&RealDisk, &path, |r| replayed.push(r.data.clone())).expect("recover");
        assert_eq!(stream_len, 10);
        assert_eq!(replayed, [b"hello".to_vec(), b"world".to_vec()]);
        let mut out = Vec::new();
        again.plan(0, 10).read_into(&mut out).expect("read");
        assert_eq!(out, b"helloworld");
    }

    #[test]
    fn a_record_bigger_than_the_reserve_grows_the_file_to_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.seg");
        let mut segment = Segment::create(&RealDisk, &path).expect("create");
        let big = vec![7u8; 300 * 1024];
        segment.append(&record(&big, &[big.len() as u32]), 0);
        segment.take_pending().write_and_sync().expect("write");
        assert!(std::fs::metadata(&path).expect("meta").len() >= segment.written());
        let (_, stream_len) = Segment::recover(&RealDisk, &path, |_| {}).expect("recover");
        assert_eq!(stream_len, big.len() as u64);
    }
}
