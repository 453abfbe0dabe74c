package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// frameHeaderSize is the big-endian uint32 length that precedes every
// request and response envelope.
const frameHeaderSize = 4

// Response status codes carried in envelope.Status.
const (
	statusOK          uint8 = 0 // Body is the handler's response
	statusError       uint8 = 1 // Err is the handler's error message
	statusUnknownKind uint8 = 2 // no handler for the request's Kind
)

// envelope is the body of a frame, used for both directions. On the wire it
// is a msgpack array of exactly envelopeFields elements in field order. It is
// encoded and decoded field by field rather than by reflection: that is
// faster, and the decoder never recurses or allocates on a peer's say-so.
type envelope struct {
	// Kind selects the handler (requests only).
	Kind uint8
	// Status is one of the status* codes (responses only).
	Status uint8
	// TimeoutNanos is the caller's remaining time budget (requests only).
	// A duration rather than a deadline, so clock skew between nodes does
	// not shorten or stretch the handler's context.
	TimeoutNanos int64
	// Body is the request or response payload. After decoding it aliases
	// the frame buffer, which is never reused.
	Body []byte
	// Err is the remote error message when Status is not statusOK.
	Err string
}

// envelopeFields is the number of array elements in an encoded envelope.
const envelopeFields = 5

// errMalformedFrame wraps every decoding failure so callers can tell a
// protocol violation (close the connection) from an I/O error.
var errMalformedFrame = errors.New("transport: malformed frame")

// frameBufPool recycles encode buffers; buffers that grew beyond
// maxPooledFrameBuf are dropped so one large response does not pin memory.
var frameBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledFrameBuf = 64 << 10

// writeFrame encodes env and writes it to w as one length-prefixed frame in
// a single Write, so a yamux stream sends it as few data frames as possible.
func writeFrame(w io.Writer, env *envelope, maxSize int) error {
	buf := frameBufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledFrameBuf {
			frameBufPool.Put(buf)
		}
	}()
	buf.Reset()
	buf.Write([]byte{0, 0, 0, 0})

	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	err := encodeEnvelope(enc, env)
	msgpack.PutEncoder(enc)
	if err != nil {
		return fmt.Errorf("transport: encode frame: %w", err)
	}
	n := buf.Len() - frameHeaderSize
	if n > maxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, maxSize)
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[:frameHeaderSize], uint32(n))
	_, err = w.Write(b)
	return err
}

// readFrame reads one length-prefixed frame from r and decodes it into env.
// The declared length is checked against maxSize before anything is
// allocated, so a hostile prefix cannot make the node reserve gigabytes.
// started, if not nil, is called once the first byte has arrived: the caller
// uses it to start the "a begun frame must finish in time" deadline while
// letting an idle stream wait for its next request indefinitely.
//
// Errors wrapping errMalformedFrame or ErrFrameTooLarge are protocol
// violations; others are I/O errors (io.EOF before the first byte means the
// peer closed the stream cleanly).
func readFrame(r io.Reader, maxSize int, started func() error, env *envelope) error {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return err
	}
	if started != nil {
		if err := started(); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return unexpectedEOF(err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(maxSize) {
		return fmt.Errorf("%w: peer declared %d bytes, limit %d", ErrFrameTooLarge, n, maxSize)
	}
	if n == 0 {
		return fmt.Errorf("%w: empty frame", errMalformedFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return unexpectedEOF(err)
	}
	return decodeEnvelope(body, env)
}

// encodeEnvelope writes env as a msgpack array.
func encodeEnvelope(enc *msgpack.Encoder, env *envelope) error {
	if err := enc.EncodeArrayLen(envelopeFields); err != nil {
		return err
	}
	if err := enc.EncodeUint(uint64(env.Kind)); err != nil {
		return err
	}
	if err := enc.EncodeUint(uint64(env.Status)); err != nil {
		return err
	}
	if err := enc.EncodeInt(env.TimeoutNanos); err != nil {
		return err
	}
	if err := enc.EncodeBytes(env.Body); err != nil {
		return err
	}
	return enc.EncodeString(env.Err)
}

// decodeEnvelope decodes a frame body into env. The body must hold exactly
// one envelope: a wrong element count, an out-of-range number or trailing
// bytes mean the peer does not speak this protocol.
func decodeEnvelope(body []byte, env *envelope) error {
	*env = envelope{}
	rd := bytes.NewReader(body)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	// bytes.Reader is an io.ByteScanner, so the decoder reads it directly
	// without a bufio layer and rd.Len() below is exact.
	dec.Reset(rd)

	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	if n != envelopeFields {
		return fmt.Errorf("%w: %d fields, want %d", errMalformedFrame, n, envelopeFields)
	}
	kind, err := decodeByte(dec)
	if err != nil {
		return err
	}
	status, err := decodeByte(dec)
	if err != nil {
		return err
	}
	timeout, err := dec.DecodeInt64()
	if err != nil {
		return fmt.Errorf("%w: timeout: %v", errMalformedFrame, err)
	}
	payload, err := decodeRaw(dec, rd, body)
	if err != nil {
		return fmt.Errorf("%w: body: %v", errMalformedFrame, err)
	}
	msg, err := decodeRaw(dec, rd, body)
	if err != nil {
		return fmt.Errorf("%w: error text: %v", errMalformedFrame, err)
	}
	if rd.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errMalformedFrame, rd.Len())
	}
	*env = envelope{Kind: kind, Status: status, TimeoutNanos: timeout, Body: payload, Err: string(msg)}
	return nil
}

// decodeRaw decodes a msgpack bin or str header and returns its content as a
// sub-slice of body instead of letting the decoder copy it: no second
// allocation, and a declared length beyond the bytes left is an error before
// anything is allocated for it. rd must be the reader dec was reset to.
func decodeRaw(dec *msgpack.Decoder, rd *bytes.Reader, body []byte) ([]byte, error) {
	size, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if size <= 0 { // -1 is msgpack nil
		return nil, nil
	}
	if size > rd.Len() {
		return nil, fmt.Errorf("declares %d bytes, %d left", size, rd.Len())
	}
	start := len(body) - rd.Len()
	if _, err := rd.Seek(int64(size), io.SeekCurrent); err != nil {
		return nil, err
	}
	return body[start : start+size : start+size], nil
}

// decodeByte decodes an unsigned number that must fit in a byte; silently
// truncating 300 to 44 would route a request to the wrong handler.
func decodeByte(dec *msgpack.Decoder) (uint8, error) {
	v, err := dec.DecodeUint64()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	if v > 0xff {
		return 0, fmt.Errorf("%w: value %d does not fit a byte", errMalformedFrame, v)
	}
	return uint8(v), nil
}

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
