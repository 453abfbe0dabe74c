package transport

import (
	"errors"
	"io"
)

// Response status codes: the kind byte of a response frame.
const (
	statusOK          uint8 = 0 // the body is the answer
	statusError       uint8 = 1 // the body is the error's text
	statusUnknownKind uint8 = 2 // no handler for the request's kind (Call only)
)

// errMalformedFrame wraps every decoding failure so callers can tell a
// protocol violation (close the connection) from an I/O error.
var errMalformedFrame = errors.New("transport: malformed frame")

// unexpectedEOF turns an EOF in the middle of a frame into
// io.ErrUnexpectedEOF, so it is not mistaken for a clean close.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// isProtocolError reports whether err means the peer sent bytes that do not
// follow the protocol, as opposed to a network failure or timeout.
func isProtocolError(err error) bool {
	return errors.Is(err, errMalformedFrame) || errors.Is(err, ErrFrameTooLarge)
}
