//! One sealed, anonymous shared-memory segment (memfd).
//!
//! ```text
//!  daemon: memfd_create ─ftruncate(size)─ mmap(RW, shared) ─seal(SHRINK|GROW|FUTURE_WRITE)─▶ fd to clients
//!  client:                                    mmap(fd, PROT_READ) ok;  mmap(fd, PROT_WRITE) → EPERM
//! ```
//!
//! No name in /dev/shm: nothing is left behind when a process dies, and
//! Kubernetes' 64 MiB /dev/shm limit does not apply. The daemon's writable
//! mapping exists before `F_SEAL_FUTURE_WRITE`, so it keeps writing; every
//! later mapping (the clients') can only read. Size seals make the segment's
//! length a fact clients can rely on (no SIGBUS from a shrink).

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::RingError;

/// A sealed memfd mapped read-write into this process.
#[derive(Debug)]
pub struct MemfdSegment {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access to
// its bytes is coordinated by the slot table (one writer per slot).
unsafe impl Send for MemfdSegment {}
// SAFETY: as above; `&MemfdSegment` only hands out raw slot views under the
// slot table's discipline.
unsafe impl Sync for MemfdSegment {}

impl MemfdSegment {
    /// Creates a sealed segment of `len` bytes named `name` (for
    /// /proc/PID/fd listings only).
    pub fn create(name: &str, len: usize) -> Result<MemfdSegment, RingError> {
        let size = NonZeroUsize::new(len).ok_or(RingError::Empty)?;
        let err = |what: &'static str| move |e: nix::Error| RingError::Os { what, errno: e };
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(err("memfd_create"))?;
        let off = i64::try_from(len).map_err(|_| RingError::TooLarge { bytes: len as u64 })?;
        nix::unistd::ftruncate(&fd, off).map_err(err("ftruncate"))?;
        // SAFETY: a fresh shared mapping of a file we own, of exactly its
        // length; nothing else aliases it yet.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(err("mmap"))?;
        let seals = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_FUTURE_WRITE
            | SealFlag::F_SEAL_SEAL;
        let segment = MemfdSegment { fd, ptr: ptr.cast(), len };
        fcntl(&segment.fd, FcntlArg::F_ADD_SEALS(seals)).map_err(err("fcntl(F_ADD_SEALS)"))?;
        Ok(segment)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The end of `len` bytes at `offset`, if they lie inside the segment.
    fn check_range(&self, offset: usize, len: usize) -> Result<usize, RingError> {
        offset.checked_add(len).filter(|&end| end <= self.len).ok_or(RingError::OutOfBounds {
            offset: offset as u64,
            len: len as u64,
            size: self.len as u64,
        })
    }

    /// The mapping's first byte, for registering it with CUDA; using it is
    /// the caller's unsafe business.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The descriptor to pass to clients (SCM_RIGHTS).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes `bytes` at `offset` (the range is checked).
    ///
    /// # Safety
    ///
    /// The caller must hold the only claim to the range (a slot in FILLING,
    /// see `SlotTable`): no other writer and no reader in this process
    /// while it writes. Safe code could otherwise race two writers.
    pub unsafe fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<(), RingError> {
        let end = self.check_range(offset, bytes.len())?;
        debug_assert!(end <= self.len);
        // SAFETY: the range lies inside the mapping (checked above), the
        // mapping lives as long as `self`, and the caller's contract gives it
        // exclusive write access to the range.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        };
        Ok(())
    }

    /// A writable view of `len` bytes at `offset`.
    ///
    /// # Safety
    ///
    /// `offset + len` must lie within the segment, and the caller must hold
    /// the only claim to that range (a slot in FILLING) for as long as the
    /// slice lives: no other writer and no reader in this process.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slot_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset + len <= self.len);
        // SAFETY: in bounds and exclusive by the caller's contract; the
        // mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) }
    }

    /// Reads `len` bytes at `offset` (tests, diagnostics).
    ///
    /// # Safety
    ///
    /// No writer may be writing the range meanwhile (the slot is not in
    /// FILLING, or the caller is its writer).
    pub unsafe fn read_at(&self, offset: usize, len: usize) -> Result<Vec<u8>, RingError> {
        let end = self.check_range(offset, len)?;
        let mut out = vec![0u8; end - offset];
        // SAFETY: in bounds (checked), mapping alive for `self`'s lifetime,
        // and no concurrent writer by the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(out)
    }
}

impl Drop for MemfdSegment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `create`, unmapped
        // exactly once, here. Failure is only logged: Drop never panics.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(error = %e, "munmap of a ring segment failed");
        }
    }
}

/// A read-only mapping of a segment's descriptor, as a client makes it.
#[derive(Debug)]
pub struct ReadOnlyMapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl ReadOnlyMapping {
    /// Maps `fd` read-only (`len` bytes), once it is known to be a memfd
    /// sealed against shrinking and at least `len` long: a descriptor that
    /// could shrink under the mapping would turn reads into SIGBUS.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> Result<ReadOnlyMapping, RingError> {
        let size = NonZeroUsize::new(len).ok_or(RingError::Empty)?;
        let seals = fcntl(fd, FcntlArg::F_GET_SEALS)
            .map_err(|e| RingError::Os { what: "fcntl(F_GET_SEALS)", errno: e })?;
        if SealFlag::from_bits_truncate(seals) & SealFlag::F_SEAL_SHRINK != SealFlag::F_SEAL_SHRINK
        {
            return Err(RingError::Unsealed);
        }
        let actual = nix::sys::stat::fstat(fd)
            .map_err(|e| RingError::Os { what: "fstat", errno: e })?
            .st_size;
        if u64::try_from(actual).unwrap_or(0) < len as u64 {
            return Err(RingError::OutOfBounds {
                offset: 0,
                len: len as u64,
                size: actual.max(0) as u64,
            });
        }
        // SAFETY: a new read-only shared mapping of a memfd sealed against
        // shrinking and at least `len` long (both checked above), so every
        // byte of it stays backed.
        let ptr = unsafe { mmap(None, size, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, fd, 0) }
            .map_err(|e| RingError::Os { what: "mmap(PROT_READ)", errno: e })?;
        Ok(ReadOnlyMapping { ptr: ptr.cast(), len })
    }

    /// Tries a writable mapping, as a misbehaving client would.
    pub fn try_map_writable(fd: BorrowedFd<'_>, len: usize) -> Result<(), nix::Error> {
        let size = NonZeroUsize::new(len).ok_or(nix::Error::EINVAL)?;
        // SAFETY: if this unexpectedly succeeds, the mapping is unmapped at
        // once and never dereferenced.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        // SAFETY: the mapping just made, of `len` bytes.
        let _ = unsafe { munmap(ptr, len) };
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(error = %e, "munmap of a read-only mapping failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_but_cannot_write_or_resize() {
        let seg = MemfdSegment::create("stoker-test", 1 << 20).unwrap();
        // SAFETY: this test is the segment's only user (the writes below too).
        unsafe { seg.write_at(4096, b"hello ring") }.unwrap();
        let ro = ReadOnlyMapping::map(seg.fd(), seg.len()).unwrap();
        assert_eq!(&ro.bytes()[4096..4106], b"hello ring");
        // The daemon's earlier mapping keeps writing; clients see it.
        // SAFETY: as above.
        unsafe { seg.write_at(4096, b"HELLO") }.unwrap();
        assert_eq!(&ro.bytes()[4096..4101], b"HELLO");
        assert_eq!(ReadOnlyMapping::try_map_writable(seg.fd(), seg.len()), Err(nix::Error::EPERM));
        assert_eq!(nix::unistd::ftruncate(seg.fd(), 10), Err(nix::Error::EPERM));
        assert_eq!(nix::unistd::ftruncate(seg.fd(), 2 << 20), Err(nix::Error::EPERM));
    }

    #[test]
    fn out_of_bounds_writes_are_errors() {
        let seg = MemfdSegment::create("stoker-test", 4096).unwrap();
        // SAFETY: this test is the segment's only user.
        let r = unsafe { seg.write_at(4090, &[0; 10]) };
        assert!(matches!(r, Err(RingError::OutOfBounds { .. })));
        // SAFETY: as above.
        let r = unsafe { seg.write_at(usize::MAX, &[0; 1]) };
        assert!(matches!(r, Err(RingError::OutOfBounds { .. })));
        assert!(matches!(MemfdSegment::create("x", 0), Err(RingError::Empty)));
    }

    #[test]
    fn a_client_maps_only_a_sealed_segment_as_long_as_it_says() {
        let seg = MemfdSegment::create("stoker-test", 8192).unwrap();
        let r = ReadOnlyMapping::map(seg.fd(), 16384);
        assert!(matches!(r, Err(RingError::OutOfBounds { .. })), "longer than the segment");
        let plain = memfd_create("unsealed", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&plain, 8192).unwrap();
        let r = ReadOnlyMapping::map(plain.as_fd(), 8192);
        assert!(matches!(r, Err(RingError::Unsealed)), "could shrink under the mapping");
    }
}
