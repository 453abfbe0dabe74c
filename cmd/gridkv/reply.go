package main

import "strconv"

// Replies that differ between RESP2 and RESP3. redcon writes RESP2 only; the RESP3 forms
// (null, map, verbatim string) are written raw.

func (c *client) ok() { c.conn.WriteString("OK") }

func (c *client) null() {
	if c.proto == 3 {
		c.conn.WriteRaw([]byte("_\r\n"))
		return
	}
	c.conn.WriteNull()
}

// mapHeader starts a map of n pairs: a RESP3 map, or a flat array of 2n items in RESP2.
func (c *client) mapHeader(n int) {
	if c.proto == 3 {
		c.conn.WriteRaw(appendHeader(nil, '%', n))
		return
	}
	c.conn.WriteArray(2 * n)
}

// setHeader starts a set of n items: a RESP3 set, or an array in RESP2.
func (c *client) setHeader(n int) {
	if c.proto == 3 {
		c.conn.WriteRaw(appendHeader(nil, '~', n))
		return
	}
	c.conn.WriteArray(n)
}

// text writes a human-readable text: a RESP3 verbatim string, or a bulk string in RESP2.
func (c *client) text(s string) {
	if c.proto == 3 {
		b := appendHeader(nil, '=', len(s)+4)
		b = append(b, "txt:"...)
		b = append(b, s...)
		b = append(b, '\r', '\n')
		c.conn.WriteRaw(b)
		return
	}
	c.conn.WriteBulkString(s)
}

func appendHeader(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}
