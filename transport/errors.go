package transport

import "errors"

var (
	// ErrClosed is returned by operations on a Transport (or one of its Raft
	// layers or its gossip transport) after it has been closed.
	ErrClosed = errors.New("transport: closed")

	// ErrFrameTooLarge is returned when a request or response would exceed
	// NetworkOptions.MaxFrameSize. A peer that sends such a frame loses its
	// connection.
	ErrFrameTooLarge = errors.New("transport: frame too large")

	// ErrUnknownKind matches (with errors.Is) the *RemoteError returned by
	// Call when the peer has no handler registered for the request kind.
	ErrUnknownKind = errors.New("transport: no handler for request kind")

	// ErrNotSent wraps a Call failure where no byte of the request left this
	// node (the peer could not be reached, ctx had already ended, or the
	// Transport is closed): the handler certainly did not run, so the request
	// may be sent again, there or elsewhere.
	ErrNotSent = errors.New("transport: request not sent")
)

// RemoteError is the error a peer's Handler returned, carried back to the
// caller of Call. Only the message crosses the network; the error's type and
// any wrapped errors stay on the peer.
type RemoteError struct {
	// Msg is the text of the peer's error.
	Msg string

	// unknownKind marks the error the peer sends when no handler exists for
	// the request's kind, so callers can test for ErrUnknownKind.
	unknownKind bool
}

// Error implements error.
func (e *RemoteError) Error() string { return "transport: remote: " + e.Msg }

// Is lets errors.Is(err, ErrUnknownKind) recognise a missing remote handler
// without comparing message strings.
func (e *RemoteError) Is(target error) bool {
	return target == ErrUnknownKind && e.unknownKind
}
