package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/feellmoose/gridkv"
)

// command describes one RESP command: Redis's arity convention (n: exactly n arguments
// counting the name, -n: at least n), the key positions COMMAND reports, and its handler.
type command struct {
	name     string // lower case
	arity    int
	flags    []string
	firstKey int
	lastKey  int
	step     int
	group    string
	summary  string
	run      func(s *respServer, c *client, args [][]byte)
	index    int // in commandList, and in each server's counters
}

// commands is the table, by lower-case name; commandList holds the same in a fixed order.
var (
	commands    = map[string]*command{}
	commandList []*command
)

func register(cmds ...*command) {
	for _, c := range cmds {
		c.index = len(commandList)
		commands[c.name] = c
		commandList = append(commandList, c)
	}
}

// dispatch checks the name and arity as Redis does, then runs the command.
func (s *respServer) dispatch(c *client, args [][]byte) {
	var lower [24]byte
	name := args[0]
	var cmd *command
	if len(name) <= len(lower) {
		for i, b := range name {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			lower[i] = b
		}
		cmd = commands[string(lower[:len(name)])] // no allocation for the lookup
	}
	s.stats.commands.Add(1)
	if cmd == nil {
		s.stats.unknown.Add(1)
		c.conn.WriteError(unknownCommand(args))
		return
	}
	s.stats.served[cmd.index].Add(1)
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		c.conn.WriteError(wrongArity(cmd.name))
		return
	}
	cmd.run(s, c, args)
}

func wrongArity(name string) string {
	return "ERR wrong number of arguments for '" + name + "' command"
}

// unknownCommand is Redis's reply to an unknown command: the name and the first arguments,
// quoted, about 128 bytes of each at most, with line breaks turned into spaces so that the
// reply stays one protocol line.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	for _, a := range args[1:] {
		if b.Len() >= 128 {
			break
		}
		room := 128 - b.Len()
		if len(a) > room {
			a = a[:room]
		}
		b.WriteString("'")
		b.Write(a)
		b.WriteString("' ")
	}
	name := args[0]
	if len(name) > 128 {
		name = name[:128]
	}
	msg := fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", name, b.String())
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
}

const (
	errSyntax       = "ERR syntax error"
	errNotInteger   = "ERR value is not an integer or out of range"
	errOverflow     = "ERR increment or decrement would overflow"
	errInvalidScan  = "ERR invalid cursor"
	errReplyTooLong = "ERR reply too large: ask for fewer keys at once"
)

// maxReplyBytes bounds the values one MGET gathers in memory.
const maxReplyBytes = 64 << 20

// opContext bounds one command's wait for a leader or quorum.
func (s *respServer) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.cfg.opTimeout)
}

// writeError answers a GridKV error with the closest Redis reply.
func (c *client) writeError(err error) {
	c.conn.WriteError(errorReply(err))
}

func errorReply(err error) string {
	switch {
	case errors.Is(err, gridkv.ErrInvalidKey):
		return fmt.Sprintf("ERR invalid key: GridKV keys are 1 to %d bytes", gridkv.MaxKeySize)
	case errors.Is(err, gridkv.ErrValueTooLarge):
		return fmt.Sprintf("ERR string exceeds maximum allowed size (GridKV values are at most %d bytes)", gridkv.MaxValueSize)
	case errors.Is(err, gridkv.ErrMemoryLimit):
		return "OOM command not allowed when used memory > 'maxmemory'."
	case errors.Is(err, gridkv.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return "CLUSTERDOWN no leader or quorum reachable for this key in time; a write may or may not have taken effect"
	case errors.Is(err, gridkv.ErrClosed), errors.Is(err, context.Canceled):
		return "ERR node is shutting down"
	}
	msg := strings.NewReplacer("\r", " ", "\n", " ").Replace(err.Error())
	return "ERR " + msg
}

// isMissing reports a read of a key that cannot exist: absent, or not a valid GridKV key
// (Redis accepts an empty key; GridKV holds none, so a read of one finds nothing).
func isMissing(err error) bool {
	return errors.Is(err, gridkv.ErrKeyNotFound) || errors.Is(err, gridkv.ErrInvalidKey)
}

func equalFold(b []byte, s string) bool { return bytes.EqualFold(b, []byte(s)) }
