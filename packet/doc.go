// Package packet is the byte codec of the gateway's native binary WebSocket
// protocol: the handshake (server hello, client auth message), the
// server-bound packets a client sends and the client-bound packets the
// server sends.
//
// The package is pure: it does no I/O, keeps no global mutable state and
// imports only the standard library. It is also zero-allocation on the hot
// path: decoders return subslices of the message they read instead of
// copies, errors are package-level sentinel values (so returning one does
// not box anything), and encoders append to a caller-supplied buffer, so
// they allocate only when that buffer must grow.
//
// # Wire format
//
// Numbers are signed big-endian: byte (1 byte), short (int16), int (int32),
// long (int64). A string is a short byte length (0..MaxStringLen) followed
// by that many bytes of valid UTF-8; a bytes value is an int length
// (0..2^31-1) followed by the bytes. A negative length is an error. A
// WebSocket message holds zero or more packets back to back; each packet is
// an id byte followed by its arguments.
//
// # Where each part runs
//
// Server, per connection:
//   - Hello is written once when the connection opens.
//   - ParseAuth checks the first client message. ErrAuthVersion maps to the
//     close code CloseVersionMismatch, the other auth errors to
//     CloseUnauthorized.
//   - A Decoder (or Validate) reads each later client message; a
//     SettingsReader walks the body of a Settings packet.
//   - AppendPong, AppendMessage, AppendMessageBytes, AppendError,
//     AppendSubscribed, AppendSubscribedBytes, AppendPublication and
//     AppendSubscribedFrom build outgoing messages; MessageLen and
//     PublicationLen size buffers for fan-out.
//
// Client side (tests, the CLI, the load generator):
//   - AppendAuth, AppendPing, AppendSettings, AppendSubscribe,
//     AppendUnsubscribe, AppendPublish and AppendSubscribeFrom build
//     outgoing messages.
//   - A ClientDecoder reads the server's messages.
//
// # Concurrency
//
// Every function is pure and safe to call from any goroutine. Decoder,
// ClientDecoder and SettingsReader are small values holding a cursor over
// one message: use one per message and do not share it between goroutines.
// The slices they return alias the message, which must therefore stay
// unmodified for as long as those slices are used.
package packet
