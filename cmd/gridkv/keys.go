package main

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/feellmoose/gridkv"
)

// The string and key commands. Each maps to GridKV calls at the node's default levels:
// reads are linearizable (the cluster's read quorum), writes acknowledged at its write
// quorum. Commands that read and then write (SET NX/XX/GET, DEL's count, INCR, EXPIRE,
// PERSIST) use CompareAndSwap or CompareAndDelete at the version read, and retry from the
// entry a mismatch returns, so no concurrent write is lost between the read and the write.

func init() {
	register(
		&command{name: "get", arity: 2, flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Returns the value of a key (Get, linearizable).", run: cmdGet},
		&command{name: "set", arity: -3, flags: []string{"write", "denyoom"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Sets a key, with EX/PX/EXAT/PXAT (WithTTL), NX/XX/GET (CompareAndSwap).", run: cmdSet},
		&command{name: "del", arity: -2, flags: []string{"write"}, firstKey: 1, lastKey: -1, step: 1, group: "keyspace",
			summary: "Deletes keys and counts the ones that existed (CompareAndDelete).", run: cmdDel},
		&command{name: "exists", arity: -2, flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: -1, step: 1, group: "keyspace",
			summary: "Counts the keys given that exist (GetEntry).", run: cmdExists},
		&command{name: "mget", arity: -2, flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: -1, step: 1, group: "string",
			summary: "Returns the values of keys (Get each, concurrently).", run: cmdMget},
		&command{name: "mset", arity: -3, flags: []string{"write", "denyoom"}, firstKey: 1, lastKey: -1, step: 2, group: "string",
			summary: "Sets keys (Set each, concurrently; not atomic across partitions).", run: cmdMset},
		&command{name: "incr", arity: 2, flags: []string{"write", "denyoom", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Adds 1 to an integer value (CompareAndSwap loop).", run: cmdIncrBy(1, false)},
		&command{name: "decr", arity: 2, flags: []string{"write", "denyoom", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Subtracts 1 from an integer value (CompareAndSwap loop).", run: cmdIncrBy(-1, false)},
		&command{name: "incrby", arity: 3, flags: []string{"write", "denyoom", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Adds to an integer value (CompareAndSwap loop).", run: cmdIncrBy(1, true)},
		&command{name: "decrby", arity: 3, flags: []string{"write", "denyoom", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "string",
			summary: "Subtracts from an integer value (CompareAndSwap loop).", run: cmdIncrBy(-1, true)},
		&command{name: "expire", arity: -3, flags: []string{"write", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "keyspace",
			summary: "Sets a key's time to live in seconds (CompareAndSwap WithTTL).", run: cmdExpire(time.Second)},
		&command{name: "pexpire", arity: -3, flags: []string{"write", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "keyspace",
			summary: "Sets a key's time to live in milliseconds (CompareAndSwap WithTTL).", run: cmdExpire(time.Millisecond)},
		&command{name: "ttl", arity: 2, flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "keyspace",
			summary: "Returns a key's time to live in seconds (Entry.ExpiresAt).", run: cmdTTL(time.Second)},
		&command{name: "pttl", arity: 2, flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "keyspace",
			summary: "Returns a key's time to live in milliseconds (Entry.ExpiresAt).", run: cmdTTL(time.Millisecond)},
		&command{name: "persist", arity: 2, flags: []string{"write", "fast"}, firstKey: 1, lastKey: 1, step: 1, group: "keyspace",
			summary: "Removes a key's time to live (CompareAndSwap without TTL).", run: cmdPersist},
	)
}

func cmdGet(s *respServer, c *client, args [][]byte) {
	ctx, cancel := s.opContext()
	v, err := s.kv.Get(ctx, string(args[1]))
	cancel()
	switch {
	case err == nil:
		c.conn.WriteBulk(v)
	case isMissing(err):
		c.null()
	default:
		c.writeError(err)
	}
}

// setOptions are SET's options after parsing.
type setOptions struct {
	nx, xx, get bool
	ttl         time.Duration // 0: none
}

// parseSetOptions follows Redis: unknown or conflicting words are a syntax error, found
// before any number is looked at; then the expiry must be a positive integer.
func parseSetOptions(args [][]byte) (setOptions, string) {
	var o setOptions
	var unit time.Duration
	var absolute bool
	var expire []byte
	seenExpiry := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case equalFold(a, "nx") && !o.xx:
			o.nx = true
		case equalFold(a, "xx") && !o.nx:
			o.xx = true
		case equalFold(a, "get"):
			o.get = true
		case equalFold(a, "keepttl") && !seenExpiry:
			return o, "ERR KEEPTTL is not supported by GridKV's SET"
		case (equalFold(a, "ex") || equalFold(a, "px") || equalFold(a, "exat") || equalFold(a, "pxat")) && !seenExpiry && i+1 < len(args):
			seenExpiry = true
			unit = time.Second
			if a[0] == 'p' || a[0] == 'P' {
				unit = time.Millisecond
			}
			absolute = len(a) == 4
			expire = args[i+1]
			i++
		default:
			return o, errSyntax
		}
	}
	if !seenExpiry {
		return o, ""
	}
	n, ok := parseInt(expire)
	if !ok {
		return o, errNotInteger
	}
	if n <= 0 || (unit == time.Second && n > math.MaxInt64/1000) {
		return o, "ERR invalid expire time in 'set' command"
	}
	ms := n
	if unit == time.Second {
		ms = n * 1000
	}
	if absolute {
		ms -= time.Now().UnixMilli()
		if ms <= 0 {
			// Redis deletes a key whose absolute expiry has passed; a TTL of 1 ms does the
			// same a moment later.
			ms = 1
		}
	}
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return o, "ERR invalid expire time in 'set' command"
	}
	o.ttl = time.Duration(ms) * time.Millisecond
	return o, ""
}

func ttlOptions(ttl time.Duration) []gridkv.Option {
	if ttl <= 0 {
		return nil
	}
	return []gridkv.Option{gridkv.WithTTL(ttl)}
}

func cmdSet(s *respServer, c *client, args [][]byte) {
	o, errMsg := parseSetOptions(args[3:])
	if errMsg != "" {
		c.conn.WriteError(errMsg)
		return
	}
	key, value := string(args[1]), args[2]
	ctx, cancel := s.opContext()
	defer cancel()
	topts := ttlOptions(o.ttl)
	if !o.nx && !o.xx && !o.get {
		if err := s.kv.Set(ctx, key, value, topts...); err != nil {
			c.writeError(err)
			return
		}
		c.ok()
		return
	}
	if o.nx && !o.get {
		// Only if absent: one compare-and-swap at version 0, no read first.
		_, err := s.kv.CompareAndSwap(ctx, key, 0, value, topts...)
		switch {
		case err == nil:
			c.ok()
		case errors.Is(err, gridkv.ErrVersionMismatch):
			c.null()
		default:
			c.writeError(err)
		}
		return
	}
	for {
		cur, err := s.readEntry(ctx, key)
		if err != nil {
			c.writeError(err)
			return
		}
		exists := cur.Version != 0
		if (o.nx && exists) || (o.xx && !exists) {
			if o.get && exists {
				c.conn.WriteBulk(cur.Value)
			} else {
				c.null()
			}
			return
		}
		_, err = s.kv.CompareAndSwap(ctx, key, cur.Version, value, topts...)
		if errors.Is(err, gridkv.ErrVersionMismatch) {
			continue // written meanwhile: read again
		}
		switch {
		case err != nil:
			c.writeError(err)
		case !o.get:
			c.ok()
		case exists:
			c.conn.WriteBulk(cur.Value)
		default:
			c.null()
		}
		return
	}
}

// readEntry reads key's entry with its deadline, linearizably; a missing key is the zero
// entry (Version 0).
func (s *respServer) readEntry(ctx context.Context, key string) (gridkv.Entry, error) {
	e, err := s.kv.GetEntry(ctx, key)
	if errors.Is(err, gridkv.ErrKeyNotFound) {
		return gridkv.Entry{Key: key}, nil
	}
	return e, err
}

func cmdDel(s *respServer, c *client, args [][]byte) {
	ctx, cancel := s.opContext()
	defer cancel()
	deleted, err := forEachKey(args[1:], func(key string) (bool, error) {
		for {
			cur, err := s.readEntry(ctx, key)
			if err != nil || cur.Version == 0 {
				return false, ignoreInvalidKey(err)
			}
			_, err = s.kv.CompareAndDelete(ctx, key, cur.Version)
			if errors.Is(err, gridkv.ErrVersionMismatch) {
				continue
			}
			return err == nil, err
		}
	})
	if err != nil {
		c.writeError(err)
		return
	}
	c.conn.WriteInt(deleted)
}

// ignoreInvalidKey treats a key GridKV cannot hold as one that does not exist.
func ignoreInvalidKey(err error) error {
	if errors.Is(err, gridkv.ErrInvalidKey) {
		return nil
	}
	return err
}

func cmdExists(s *respServer, c *client, args [][]byte) {
	ctx, cancel := s.opContext()
	defer cancel()
	n, err := forEachKey(args[1:], func(key string) (bool, error) {
		_, err := s.kv.GetEntry(ctx, key)
		if isMissing(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		c.writeError(err)
		return
	}
	c.conn.WriteInt(n)
}

// forEachKey runs fn for every key, a few at a time, and counts the true results. The first
// error wins. Keys repeat as given: EXISTS k k counts k twice, as in Redis.
func forEachKey(keys [][]byte, fn func(key string) (bool, error)) (int, error) {
	if len(keys) == 1 {
		ok, err := fn(string(keys[0]))
		if ok {
			return 1, err
		}
		return 0, err
	}
	results := make([]bool, len(keys))
	errs := make([]error, len(keys))
	runConcurrently(len(keys), func(i int) {
		results[i], errs[i] = fn(string(keys[i]))
	})
	n := 0
	for i := range keys {
		if errs[i] != nil {
			return 0, errs[i]
		}
		if results[i] {
			n++
		}
	}
	return n, nil
}

// multiKeyConcurrency bounds the goroutines one multi-key command runs at once.
const multiKeyConcurrency = 16

// runConcurrently calls fn(0..n-1), at most multiKeyConcurrency at a time, and waits.
func runConcurrently(n int, fn func(i int)) {
	workers := min(n, multiKeyConcurrency)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					return
				}
				fn(j)
			}
		}()
	}
	wg.Wait()
}

func cmdMget(s *respServer, c *client, args [][]byte) {
	ctx, cancel := s.opContext()
	defer cancel()
	keys := args[1:]
	values := make([][]byte, len(keys))
	errs := make([]error, len(keys))
	runConcurrently(len(keys), func(i int) {
		values[i], errs[i] = s.kv.Get(ctx, string(keys[i]))
	})
	total := 0
	for i, err := range errs {
		if err != nil && !isMissing(err) {
			c.writeError(err)
			return
		}
		total += len(values[i])
	}
	if total > maxReplyBytes {
		c.conn.WriteError(errReplyTooLong)
		return
	}
	c.conn.WriteArray(len(keys))
	for i := range keys {
		if errs[i] != nil {
			c.null()
		} else {
			c.conn.WriteBulk(values[i])
		}
	}
}

func cmdMset(s *respServer, c *client, args [][]byte) {
	if len(args)%2 == 0 {
		c.conn.WriteError(wrongArity("mset"))
		return
	}
	ctx, cancel := s.opContext()
	defer cancel()
	pairs := (len(args) - 1) / 2
	errs := make([]error, pairs)
	runConcurrently(pairs, func(i int) {
		errs[i] = s.kv.Set(ctx, string(args[1+2*i]), args[2+2*i])
	})
	for _, err := range errs {
		if err != nil {
			c.writeError(err)
			return
		}
	}
	c.ok()
}

// cmdIncrBy returns INCR, DECR (byArg false, delta sign) or INCRBY, DECRBY (byArg true: the
// delta is the argument, times sign). The key keeps its TTL, as in Redis.
func cmdIncrBy(sign int64, byArg bool) func(*respServer, *client, [][]byte) {
	return func(s *respServer, c *client, args [][]byte) {
		delta := sign
		if byArg {
			n, ok := parseInt(args[2])
			if !ok {
				c.conn.WriteError(errNotInteger)
				return
			}
			if sign < 0 {
				if n == math.MinInt64 {
					c.conn.WriteError("ERR decrement would overflow")
					return
				}
				n = -n
			}
			delta = n
		}
		key := string(args[1])
		ctx, cancel := s.opContext()
		defer cancel()
		for {
			cur, err := s.readEntry(ctx, key)
			if err != nil {
				c.writeError(err)
				return
			}
			var old int64
			if cur.Version != 0 {
				v, ok := parseInt(cur.Value)
				if !ok {
					c.conn.WriteError(errNotInteger)
					return
				}
				old = v
			}
			if (delta < 0 && old < math.MinInt64-delta) || (delta > 0 && old > math.MaxInt64-delta) {
				c.conn.WriteError(errOverflow)
				return
			}
			next := old + delta
			_, err = s.kv.CompareAndSwap(ctx, key, cur.Version, strconv.AppendInt(nil, next, 10), keepTTL(cur)...)
			if errors.Is(err, gridkv.ErrVersionMismatch) {
				continue
			}
			if err != nil {
				c.writeError(err)
				return
			}
			c.conn.WriteInt64(next)
			return
		}
	}
}

// keepTTL is the option that rewrites cur with the deadline it has. A deadline already
// passed gets 1 ms: the compare-and-swap then fails against the expiry, and the retry reads
// the key as gone.
func keepTTL(cur gridkv.Entry) []gridkv.Option {
	if cur.ExpiresAt.IsZero() {
		return nil
	}
	return []gridkv.Option{gridkv.WithTTL(max(time.Until(cur.ExpiresAt), time.Millisecond))}
}

// cmdExpire returns EXPIRE (unit second) or PEXPIRE (millisecond), with Redis 7's NX, XX,
// GT and LT. A deadline not in the future deletes the key, as in Redis.
func cmdExpire(unit time.Duration) func(*respServer, *client, [][]byte) {
	name := "expire"
	if unit == time.Millisecond {
		name = "pexpire"
	}
	return func(s *respServer, c *client, args [][]byte) {
		var nx, xx, gt, lt bool
		for _, a := range args[3:] {
			switch {
			case equalFold(a, "nx"):
				nx = true
			case equalFold(a, "xx"):
				xx = true
			case equalFold(a, "gt"):
				gt = true
			case equalFold(a, "lt"):
				lt = true
			default:
				c.conn.WriteError("ERR Unsupported option " + string(a))
				return
			}
		}
		if nx && (xx || gt || lt) {
			c.conn.WriteError("ERR NX and XX, GT or LT options at the same time are not compatible")
			return
		}
		if gt && lt {
			c.conn.WriteError("ERR GT and LT options at the same time are not compatible")
			return
		}
		n, ok := parseInt(args[2])
		if !ok {
			c.conn.WriteError(errNotInteger)
			return
		}
		ms := n
		if unit == time.Second {
			if n > math.MaxInt64/1000 || n < math.MinInt64/1000 {
				c.conn.WriteError("ERR invalid expire time in '" + name + "' command")
				return
			}
			ms = n * 1000
		}
		now := time.Now().UnixMilli()
		if (ms > 0 && now > math.MaxInt64-ms) || ms > math.MaxInt64/int64(time.Millisecond) {
			c.conn.WriteError("ERR invalid expire time in '" + name + "' command")
			return
		}
		key := string(args[1])
		ctx, cancel := s.opContext()
		defer cancel()
		for {
			cur, err := s.readEntry(ctx, key)
			if err != nil {
				c.writeErrorOrZero(err)
				return
			}
			if cur.Version == 0 {
				c.conn.WriteInt(0)
				return
			}
			hasTTL := !cur.ExpiresAt.IsZero()
			newDeadline := now + ms
			switch {
			case nx && hasTTL, xx && !hasTTL, gt && (!hasTTL || newDeadline <= cur.ExpiresAt.UnixMilli()),
				lt && hasTTL && newDeadline >= cur.ExpiresAt.UnixMilli():
				c.conn.WriteInt(0)
				return
			}
			if ms <= 0 {
				_, err = s.kv.CompareAndDelete(ctx, key, cur.Version)
			} else {
				_, err = s.kv.CompareAndSwap(ctx, key, cur.Version, cur.Value, gridkv.WithTTL(time.Duration(ms)*time.Millisecond))
			}
			if errors.Is(err, gridkv.ErrVersionMismatch) {
				continue
			}
			if err != nil {
				c.writeError(err)
				return
			}
			c.conn.WriteInt(1)
			return
		}
	}
}

// writeErrorOrZero answers 0 for a key GridKV cannot hold (it has no TTL to change), else
// the error.
func (c *client) writeErrorOrZero(err error) {
	if errors.Is(err, gridkv.ErrInvalidKey) {
		c.conn.WriteInt(0)
		return
	}
	c.writeError(err)
}

// cmdTTL returns TTL (unit second, rounded as Redis rounds) or PTTL: -2 for a missing key,
// -1 for a key without a deadline.
func cmdTTL(unit time.Duration) func(*respServer, *client, [][]byte) {
	return func(s *respServer, c *client, args [][]byte) {
		ctx, cancel := s.opContext()
		e, err := s.readEntry(ctx, string(args[1]))
		cancel()
		switch {
		case isMissing(err) || (err == nil && e.Version == 0):
			c.conn.WriteInt(-2)
		case err != nil:
			c.writeError(err)
		case e.ExpiresAt.IsZero():
			c.conn.WriteInt(-1)
		default:
			left := max(time.Until(e.ExpiresAt).Milliseconds(), 0)
			if unit == time.Second {
				left = (left + 500) / 1000
			}
			c.conn.WriteInt64(left)
		}
	}
}

func cmdPersist(s *respServer, c *client, args [][]byte) {
	key := string(args[1])
	ctx, cancel := s.opContext()
	defer cancel()
	for {
		cur, err := s.readEntry(ctx, key)
		if err != nil {
			c.writeErrorOrZero(err)
			return
		}
		if cur.Version == 0 || cur.ExpiresAt.IsZero() {
			c.conn.WriteInt(0)
			return
		}
		_, err = s.kv.CompareAndSwap(ctx, key, cur.Version, cur.Value) // no WithTTL: permanent
		if errors.Is(err, gridkv.ErrVersionMismatch) {
			continue
		}
		if err != nil {
			c.writeError(err)
			return
		}
		c.conn.WriteInt(1)
		return
	}
}

// parseInt parses a decimal int64 as Redis's string2ll does: an optional '-', no '+', no
// leading zeros, no spaces, nothing after the digits.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		if v > (math.MaxUint64-uint64(d-'0'))/10 {
			return 0, false
		}
		v = v*10 + uint64(d-'0')
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}
