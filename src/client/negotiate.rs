//! A connection's first packets, up to its StartupMessage: TLS (SSLRequest, or a
//! ClientHello sent at once with PostgreSQL 17's `sslnegotiation=direct`), GSSENC
//! refusal, and CancelRequest.

use tokio::io::AsyncWriteExt;

use super::login::Refusal;
use crate::clients::Cancel;
use crate::error::{ClientError, ProtocolError};
use crate::fleet::Received;
use crate::net::{Inbound, Stream};
use crate::protocol::startup::{self, FirstPacket, Startup};
use crate::state::State;
use crate::tls::{Acceptor, ClientTlsMode};
use bytes::BytesMut;

/// First byte of a TLS handshake record: a client starting TLS without asking.
const TLS_HANDSHAKE: u8 = 0x16;

/// How negotiation ended short of a StartupMessage. The stream (if any) is the one
/// to send the refusal on.
pub type Failed = (Option<Stream>, Refusal);

/// Reads packets until the StartupMessage, starting TLS on the way if asked (over
/// TCP; a Unix-socket client is answered `N`, as PostgreSQL answers it).
pub async fn first_packets(mut stream: Stream, state: &State, inbound: &mut Inbound) -> Result<(Stream, Startup), Failed> {
    let first = match inbound.peek_u8(&mut stream).await {
        Ok(b) => b,
        Err(_) => return Err((None, Refusal::Silent)),
    };
    if first == TLS_HANDSHAKE {
        let tls = state.config.client_tls();
        // Nothing to say that a TLS client could read without an acceptor.
        let (Some(acceptor), Stream::Plain(tcp)) = (&tls.acceptor, stream) else { return Err((None, Refusal::Silent)) };
        // What was read of the ClientHello goes to the handshake.
        let early = std::mem::take(inbound).into_rest();
        let s = Box::pin(acceptor.accept(tcp, &early)).await.map_err(|_| (None, Refusal::Silent))?;
        if !Acceptor::alpn_ok(&s) {
            return Err((Some(s), ProtocolError::DirectTlsWithoutAlpn.into()));
        }
        stream = s;
    }
    for _ in 0..3 {
        let body = match read_packet(&mut stream, inbound).await {
            Ok(b) => b,
            Err(r) => return Err((Some(stream), r)),
        };
        let packet = match startup::parse(&body) {
            Ok(p) => p,
            Err(e) => return Err((Some(stream), ProtocolError::from(e).into())),
        };
        match packet {
            // Sent in the clear after asking for TLS: refused, as PostgreSQL does.
            FirstPacket::Ssl if !inbound.is_empty() => return Err((Some(stream), ProtocolError::DataAfterSslRequest.into())),
            FirstPacket::Ssl => stream = Box::pin(start_tls(stream, state)).await?,
            FirstPacket::GssEnc => {
                if stream.write_all(b"N").await.is_err() {
                    return Err((None, Refusal::Silent));
                }
            }
            FirstPacket::Cancel { pid, secret } => {
                Box::pin(cancel(state, pid, &secret)).await;
                return Err((None, Refusal::Silent));
            }
            FirstPacket::Fleet(body) => {
                Box::pin(from_peer(state, &body, &mut stream)).await;
                return Err((None, Refusal::Silent));
            }
            FirstPacket::Startup(s) => {
                if !stream.is_tls() && state.config.client_tls().mode == ClientTlsMode::Require {
                    return Err((Some(stream), ClientError::TlsRequired.into()));
                }
                return Ok((stream, s));
            }
        }
    }
    Err((Some(stream), ProtocolError::TooManyNegotiationPackets.into()))
}

/// A CancelRequest: acted on here when the key is this instance's, else sent to
/// the instance of the fleet whose id the key carries (a key nobody issued cancels
/// nothing).
async fn cancel(state: &State, pid: i32, secret: &[u8]) {
    let here = state.clients.cancel(pid, secret).await;
    if here != Cancel::NotMine {
        return;
    }
    if let Some(fleet) = &state.fleet {
        let outcome = fleet.forward_cancel(pid, secret).await;
        tracing::debug!(?outcome, "cancel request for a key of another instance");
    }
}

/// A packet from another instance of the fleet: a heartbeat is answered, a
/// forwarded cancel is acted on here (and never forwarded again).
async fn from_peer(state: &State, body: &[u8], stream: &mut Stream) {
    let Some(fleet) = &state.fleet else { return };
    match fleet.on_packet(body) {
        Received::Answer(a) => {
            let _ = stream.write_all(&a).await;
        }
        Received::Cancel(pid, secret) => {
            let outcome = state.clients.cancel(pid, &secret).await;
            tracing::debug!(?outcome, "cancel request forwarded by a peer");
        }
        Received::Nothing => {}
    }
}

/// Answers an SSLRequest: 'S' and the handshake, or 'N' when TLS is off.
async fn start_tls(stream: Stream, state: &State) -> Result<Stream, Failed> {
    let tls = state.config.client_tls();
    let (acceptor, mut tcp) = match (&tls.acceptor, stream) {
        (_, tls @ Stream::Tls(_)) => return Err((Some(tls), ProtocolError::SslRequestOverTls.into())),
        (Some(acceptor), Stream::Plain(tcp)) => (acceptor, tcp),
        // TLS off, or a Unix socket: no.
        (_, mut other) => {
            return match other.write_all(b"N").await {
                Ok(()) => Ok(other),
                Err(_) => Err((None, Refusal::Silent)),
            };
        }
    };
    if tcp.write_all(b"S").await.is_err() {
        return Err((None, Refusal::Silent));
    }
    // Bytes sent after the SSLRequest and before the ClientHello were read by nobody:
    // the handshake takes the socket as it is.
    match acceptor.accept(tcp, &[]).await {
        Ok(s) => Ok(s),
        Err(e) => {
            tracing::info!(error = %e, "TLS handshake with a client failed");
            Err((None, Refusal::Silent))
        }
    }
}

/// Reads one untyped packet (length, then body).
async fn read_packet(stream: &mut Stream, inbound: &mut Inbound) -> Result<BytesMut, Refusal> {
    let len = inbound.peek_i32(stream, 0).await?;
    let len = startup::check_length(len).map_err(ProtocolError::from)?;
    inbound.skip(4);
    Ok(inbound.take(stream, len - 4).await?)
}
