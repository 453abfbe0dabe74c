package main

import (
	"errors"
	"net"
	"strconv"
)

// maxArgs bounds the arguments of one command.
const maxArgs = 1 << 20

// limitConn sits between a client's connection and redcon. It reads ahead and hands redcon
// only whole commands, after checking their frames:
//
//   - redcon keeps every incomplete command in memory, so a client could make it hold any
//     amount; here a command past max bytes is an error and the connection closes.
//   - redcon parses an incomplete command again from its start each time more bytes arrive,
//     and walks its declared argument count even when no argument has arrived: a request of
//     a few bytes ("*9999999999\r\n") kept a core busy for seconds. Handing over only whole
//     commands makes each parse happen once.
//
// Only the connection's goroutine uses it (redcon reads and handles on the same one), so it
// needs no lock.
type limitConn struct {
	net.Conn
	max   int
	buf   []byte // read from the client, not yet handed to redcon
	ready int    // buf[:ready] ends where a command ends
	err   error  // the client's read error, returned once buf[:ready] is handed over
	bad   error  // a framing error, answered once the commands before it are handed over
	f     framer
}

func (c *limitConn) Read(p []byte) (int, error) {
	for c.ready == 0 {
		if c.bad != nil {
			// redcon has answered every command before the bad frame and flushed the replies
			// before reading again, so this one comes after them, as Redis orders it.
			_, _ = c.Conn.Write([]byte("-ERR Protocol error: " + c.bad.Error() + "\r\n"))
			return 0, c.bad
		}
		if c.err != nil {
			return 0, c.err
		}
		if len(c.buf) == cap(c.buf) {
			grown := make([]byte, len(c.buf), max(2*cap(c.buf), 4<<10))
			copy(grown, c.buf)
			c.buf = grown
		}
		n, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		start := len(c.buf)
		c.buf = c.buf[:start+n]
		end, ferr := c.f.scan(c.buf[start:], c.max)
		if end >= 0 {
			c.ready = start + end
		}
		if ferr != nil {
			c.bad = ferr // the client's later bytes are not read
			continue
		}
		if err != nil {
			c.err = err
		}
	}
	n := copy(p, c.buf[:c.ready])
	c.ready -= n
	rest := copy(c.buf, c.buf[n:])
	c.buf = c.buf[:rest]
	if cap(c.buf) > 64<<10 && len(c.buf) < 4<<10 {
		// A large command has passed: an idle client keeps 4 KiB, not its largest request.
		c.buf = append(make([]byte, 0, 4<<10), c.buf...)
	}
	return n, nil
}

// framer follows RESP frames through a byte stream: arrays of bulk strings, or inline
// commands (a line). It keeps its place between calls.
type framer struct {
	state    frameState
	header   []byte // the header line read so far
	args     int64  // bulk strings still to come in this array
	bulkLeft int64  // bytes of the current bulk string still to come, with its CRLF
	cmdBytes int    // bytes of the current command so far
}

type frameState uint8

const (
	frameStart frameState = iota
	frameArrayHeader
	frameBulkHeader
	frameBulkBody
	frameInline
)

// maxHeader bounds a header line; Redis's own bound on inline requests is far larger, but a
// header is a type byte and at most 20 digits.
const maxHeader = 32

// scan consumes b. It returns the offset in b just past the last command that ended in it
// (-1 if none did), and an error for a frame Redis would refuse or a command over max bytes.
func (f *framer) scan(b []byte, maxBytes int) (int, error) {
	end := -1
	for i := 0; i < len(b); {
		if f.state == frameBulkBody {
			n := int(min(int64(len(b)-i), f.bulkLeft))
			f.bulkLeft -= int64(n)
			f.cmdBytes += n
			i += n
			if f.cmdBytes > maxBytes {
				return end, errors.New("request larger than " + strconv.Itoa(maxBytes) + " bytes")
			}
			if f.bulkLeft == 0 {
				if f.args--; f.args == 0 {
					f.state, f.cmdBytes = frameStart, 0
					end = i
				} else {
					f.state = frameBulkHeader
				}
			}
			continue
		}
		ch := b[i]
		i++
		f.cmdBytes++
		if f.cmdBytes > maxBytes {
			return end, errors.New("request larger than " + strconv.Itoa(maxBytes) + " bytes")
		}
		switch f.state {
		case frameStart:
			switch ch {
			case '*':
				f.state, f.header = frameArrayHeader, f.header[:0]
			case '\r', '\n':
				f.cmdBytes = 0 // blank line: nothing to run
				end = i
			default:
				f.state = frameInline
			}
		case frameInline:
			if ch == '\n' {
				f.state, f.cmdBytes = frameStart, 0
				end = i
			}
		case frameArrayHeader, frameBulkHeader:
			if ch != '\n' {
				if len(f.header) >= maxHeader {
					if f.state == frameArrayHeader {
						return end, errors.New("invalid multibulk length")
					}
					return end, errors.New("invalid bulk length")
				}
				f.header = append(f.header, ch)
				continue
			}
			line := f.header
			if len(line) == 0 || line[len(line)-1] != '\r' {
				if f.state == frameArrayHeader {
					return end, errors.New("invalid multibulk length")
				}
				return end, errors.New("invalid bulk length")
			}
			line = line[:len(line)-1]
			if f.state == frameArrayHeader {
				n, err := strconv.ParseInt(string(line), 10, 64)
				if err != nil || n <= 0 || n > maxArgs {
					return end, errors.New("invalid multibulk length")
				}
				f.args, f.state, f.header = n, frameBulkHeader, f.header[:0]
				continue
			}
			if len(line) == 0 {
				return end, errors.New("invalid bulk length")
			}
			if line[0] != '$' {
				return end, errors.New("expected '$', got '" + string(line[:1]) + "'")
			}
			n, err := strconv.ParseInt(string(line[1:]), 10, 64)
			if err != nil || n < 0 {
				return end, errors.New("invalid bulk length")
			}
			if n > int64(maxBytes) {
				return end, errors.New("request larger than " + strconv.Itoa(maxBytes) + " bytes")
			}
			f.bulkLeft, f.state, f.header = n+2, frameBulkBody, f.header[:0]
		}
	}
	return end, nil
}
