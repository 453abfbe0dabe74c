package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync"
	"time"

	"github.com/feellmoose/gridkv"
)

func init() {
	register(
		&command{name: "scan", arity: -2, flags: []string{"readonly"}, group: "keyspace",
			summary: "Iterates over keys in byte order (List WithStartAfter; MATCH prefix* is a List prefix).", run: cmdScan},
		&command{name: "dbsize", arity: 1, flags: []string{"readonly", "fast"}, group: "server",
			summary: "Counts the keys (List, every page: O(keys)).", run: cmdDBSize},
	)
}

// scanCursors maps the numbers SCAN hands out to the key a scan continues after. Redis
// clients (redis-cli, go-redis) parse the cursor as an unsigned 64-bit number, and a GridKV
// key (up to 1024 bytes) does not fit one, so each node remembers where its scans stopped:
// a bounded table, oldest entries dropped first and every entry forgotten after ttl. A scan
// resumed on another node, after a restart, or after its entry was dropped gets
// "ERR invalid cursor".
type scanCursors struct {
	mu      sync.Mutex // guards byID and order
	byID    map[uint64]scanPosition
	order   []uint64 // ids in the order handed out, for dropping the oldest
	limit   int
	ttl     time.Duration
	counter uint64
	salt    uint64
}

type scanPosition struct {
	after   string
	created time.Time
}

func newScanCursors(limit int, ttl time.Duration) *scanCursors {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &scanCursors{byID: map[uint64]scanPosition{}, limit: limit, ttl: ttl, salt: binary.LittleEndian.Uint64(b[:])}
}

// save returns a cursor number for a scan that goes on after key: never 0, which means
// "done", and not guessable from the previous one.
func (sc *scanCursors) save(key string) uint64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	now := time.Now()
	for len(sc.order) > 0 {
		oldest := sc.order[0]
		p, ok := sc.byID[oldest]
		if ok && len(sc.byID) < sc.limit && now.Sub(p.created) < sc.ttl {
			break
		}
		delete(sc.byID, oldest)
		sc.order = sc.order[1:]
	}
	var id uint64
	for id == 0 {
		sc.counter++
		id = mix(sc.counter^sc.salt) >> 1 // below 2^63: some clients parse a signed number
	}
	sc.byID[id] = scanPosition{after: key, created: now}
	sc.order = append(sc.order, id)
	return id
}

// load returns where the scan with cursor id continues.
func (sc *scanCursors) load(id uint64) (string, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	p, ok := sc.byID[id]
	if !ok || time.Since(p.created) >= sc.ttl {
		return "", false
	}
	return p.after, true
}

// mix is splitmix64's finalizer: a bijection, so distinct counters give distinct ids.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// cmdScan: SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]. Keys come in byte order, a
// page of COUNT (default 10) listed per call; with MATCH, the literal start of the pattern
// is the List prefix and the rest filters the page, so a call may return fewer keys than
// COUNT, or none, with a cursor that is not 0, as Redis's may. Every key present from the
// first call to the last is returned once.
func cmdScan(s *respServer, c *client, args [][]byte) {
	cursor, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		c.conn.WriteError(errInvalidScan)
		return
	}
	count := int64(10)
	var pattern []byte
	onlyStrings := true
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.conn.WriteError(errSyntax)
			return
		}
		switch v := args[i+1]; {
		case equalFold(args[i], "count"):
			n, ok := parseInt(v)
			if !ok {
				c.conn.WriteError(errNotInteger)
				return
			}
			if n < 1 {
				c.conn.WriteError(errSyntax)
				return
			}
			count = min(n, gridkv.MaxListLimit)
		case equalFold(args[i], "match"):
			pattern = v
		case equalFold(args[i], "type"):
			onlyStrings = equalFold(v, "string") // GridKV holds strings only
		default:
			c.conn.WriteError(errSyntax)
			return
		}
	}
	if !onlyStrings {
		// GridKV holds strings only: no key has another type, so the scan is over.
		c.conn.WriteArray(2)
		c.conn.WriteBulkString("0")
		c.conn.WriteArray(0)
		return
	}
	opts := []gridkv.Option{gridkv.WithLimit(int(count))}
	if cursor != 0 {
		after, ok := s.scans.load(cursor)
		if !ok {
			c.conn.WriteError(errInvalidScan)
			return
		}
		opts = append(opts, gridkv.WithStartAfter(after))
	}
	prefix, exact := globPrefix(pattern)
	ctx, cancel := s.opContext()
	page, err := s.kv.List(ctx, prefix, opts...)
	cancel()
	if err != nil {
		c.writeError(err)
		return
	}
	var keys []string
	for _, e := range page.Entries {
		if exact || globMatch(pattern, []byte(e.Key)) {
			keys = append(keys, e.Key)
		}
	}
	next := uint64(0)
	if page.More && len(page.Entries) > 0 {
		next = s.scans.save(page.Entries[len(page.Entries)-1].Key)
	}
	c.conn.WriteArray(2)
	c.conn.WriteBulkString(strconv.FormatUint(next, 10))
	c.conn.WriteArray(len(keys))
	for _, k := range keys {
		c.conn.WriteBulkString(k)
	}
}

// cmdDBSize counts every key by listing them all: O(keys), a page of MaxListLimit at a time.
func cmdDBSize(s *respServer, c *client, args [][]byte) {
	ctx, cancel := s.opContext()
	defer cancel()
	n, _, err := s.countKeys(ctx)
	if err != nil {
		c.writeError(err)
		return
	}
	c.conn.WriteInt(n)
}

// countKeys counts the keys, and those with a TTL.
func (s *respServer) countKeys(ctx context.Context) (keys, expiring int, err error) {
	after := ""
	for {
		opts := []gridkv.Option{gridkv.WithLimit(gridkv.MaxListLimit)}
		if after != "" {
			opts = append(opts, gridkv.WithStartAfter(after))
		}
		page, err := s.kv.List(ctx, "", opts...)
		if err != nil {
			return 0, 0, err
		}
		for _, e := range page.Entries {
			keys++
			if !e.ExpiresAt.IsZero() {
				expiring++
			}
		}
		if !page.More || len(page.Entries) == 0 {
			return keys, expiring, nil
		}
		after = page.Entries[len(page.Entries)-1].Key
	}
}

// globPrefix returns the literal start of a Redis glob pattern, the part before its first
// special character, and whether the pattern is that literal followed by one '*' (or
// nothing): then every key with the prefix matches and no filter is needed.
func globPrefix(pattern []byte) (prefix string, exact bool) {
	if pattern == nil {
		return "", true
	}
	for i, ch := range pattern {
		switch ch {
		case '*':
			return string(pattern[:i]), i == len(pattern)-1
		case '?', '[', '\\':
			return string(pattern[:i]), false
		}
	}
	return string(pattern), false // no wildcard: the key must equal it, checked by the filter
}

// globMatch reports whether s matches a Redis glob pattern: * any run, ? one byte, [abc],
// [^a], [a-z] classes, \ escapes the next byte. It backtracks only to the last '*', so its
// time is O(len(p) * len(s)) whatever the pattern.
func globMatch(p, s []byte) bool {
	pi, si := 0, 0
	star, starS := -1, 0
	for si < len(s) {
		if pi < len(p) && p[pi] == '*' {
			star, starS = pi, si
			pi++
			continue
		}
		if pi < len(p) {
			if n, ok := matchOne(p[pi:], s[si]); ok {
				pi += n
				si++
				continue
			}
		}
		if star < 0 {
			return false
		}
		starS++ // let the last '*' take one more byte
		pi, si = star+1, starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchOne matches the one-byte token at the start of p (a byte, ?, a class, an escape)
// against ch, and returns the token's length.
func matchOne(p []byte, ch byte) (int, bool) {
	switch p[0] {
	case '?':
		return 1, true
	case '\\':
		if len(p) >= 2 {
			return 2, p[1] == ch
		}
		return 1, ch == '\\'
	case '[':
		i := 1
		not := i < len(p) && p[i] == '^'
		if not {
			i++
		}
		matched := false
		for i < len(p) && p[i] != ']' {
			switch {
			case p[i] == '\\' && i+1 < len(p):
				matched = matched || p[i+1] == ch
				i += 2
			case i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']':
				lo, hi := p[i], p[i+2]
				if lo > hi {
					lo, hi = hi, lo
				}
				matched = matched || (ch >= lo && ch <= hi)
				i += 3
			default:
				matched = matched || p[i] == ch
				i++
			}
		}
		if i < len(p) {
			i++ // the ']'
		}
		return i, matched != not
	}
	return 1, p[0] == ch
}
