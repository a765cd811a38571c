//! CUDA IPC handles (`CUipcMemHandle`, `CUipcEventHandle`) as bytes on the
//! wire: 64 opaque bytes each. Whoever holds one can map the memory or wait
//! on the event from another process on the node, so they are secrets like
//! the ring's descriptor: never logged, sent only to the session's peer.

use std::ffi::c_char;

/// Bytes of an IPC handle, for memory and events alike.
pub const IPC_HANDLE_BYTES: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpcHandle([u8; IPC_HANDLE_BYTES]);

impl std::fmt::Debug for IpcHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A capability: never printed.
        f.write_str("IpcHandle(..)")
    }
}

/// A handle that is not 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a CUDA IPC handle is {IPC_HANDLE_BYTES} bytes, not {got}")]
pub struct BadIpcHandle {
    pub got: usize,
}

impl IpcHandle {
    pub fn from_raw(raw: [c_char; IPC_HANDLE_BYTES]) -> IpcHandle {
        IpcHandle(raw.map(|c| c as u8))
    }

    pub fn to_raw(self) -> [c_char; IPC_HANDLE_BYTES] {
        self.0.map(|b| b as c_char)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// From the wire: exactly 64 bytes or an error.
    pub fn from_bytes(b: &[u8]) -> Result<IpcHandle, BadIpcHandle> {
        let arr: [u8; IPC_HANDLE_BYTES] =
            b.try_into().map_err(|_| BadIpcHandle { got: b.len() })?;
        Ok(IpcHandle(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_survives_the_wire_and_the_raw_form() {
        let mut raw = [0 as c_char; IPC_HANDLE_BYTES];
        for (i, c) in raw.iter_mut().enumerate() {
            *c = (i as u8).wrapping_mul(37) as c_char; // every bit pattern, signed or not
        }
        let h = IpcHandle::from_raw(raw);
        assert_eq!(h.to_raw(), raw);
        let back = IpcHandle::from_bytes(h.as_bytes()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn a_wrong_length_is_refused_and_nothing_is_printed() {
        assert_eq!(IpcHandle::from_bytes(&[0; 63]), Err(BadIpcHandle { got: 63 }));
        assert_eq!(IpcHandle::from_bytes(&[0; 65]), Err(BadIpcHandle { got: 65 }));
        let h = IpcHandle::from_bytes(&[0xab; 64]).unwrap();
        assert_eq!(format!("{h:?}"), "IpcHandle(..)");
    }
}
