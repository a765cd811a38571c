//! Handing a segment's descriptor to a client over a Unix socket
//! (SCM_RIGHTS), with a small payload describing it.
//!
//! The kernel duplicates the descriptor into the receiving process; nothing
//! is named, so nothing outlives the two processes.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::RingError;

/// The most payload bytes `recv_fd` accepts with a descriptor.
pub const MAX_PAYLOAD: usize = 4096;

/// Sends `fd` and `payload` (at least one byte) over the connected Unix socket `sock`.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, payload: &[u8]) -> Result<(), RingError> {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return Err(RingError::OutOfBounds {
            offset: 0,
            len: payload.len() as u64,
            size: MAX_PAYLOAD as u64,
        });
    }
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(payload)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| RingError::Os { what: "sendmsg(SCM_RIGHTS)", errno: e })?;
    Ok(())
}

/// Receives one descriptor and its payload from `sock`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<(OwnedFd, Vec<u8>), RingError> {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut cmsg_space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (fd, n) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| RingError::Os { what: "recvmsg(SCM_RIGHTS)", errno: e })?;
        let mut fd = None;
        for cmsg in
            msg.cmsgs().map_err(|e| RingError::Os { what: "reading control messages", errno: e })?
        {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel just installed `raw` in our table
                    // for us; we are its only owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        (fd, msg.bytes)
    };
    let fd = fd.ok_or(RingError::Os {
        what: "recvmsg: no descriptor in the message",
        errno: nix::Error::EBADMSG,
    })?;
    buf.truncate(n);
    Ok((fd, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{MemfdSegment, ReadOnlyMapping};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_segment_travels_and_arrives_read_only() {
        let seg = MemfdSegment::create("stoker-test", 1 << 16).unwrap();
        // SAFETY: this test is the segment's only user.
        unsafe { seg.write_at(100, b"over the socket") }.unwrap();
        let (daemon, client) = UnixStream::pair().unwrap();
        send_fd(daemon.as_fd(), seg.fd(), b"{\"slots\":4}").unwrap();
        let (fd, payload) = recv_fd(client.as_fd()).unwrap();
        assert_eq!(payload, b"{\"slots\":4}");
        let ro = ReadOnlyMapping::map(fd.as_fd(), 1 << 16).unwrap();
        assert_eq!(&ro.bytes()[100..115], b"over the socket");
        assert_eq!(ReadOnlyMapping::try_map_writable(fd.as_fd(), 1 << 16), Err(nix::Error::EPERM));
    }
}
