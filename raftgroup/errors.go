package raftgroup

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLeader reports that this replica is not its group's leader. The request was not
	// proposed: it is safe to retry at the leader. Errors carrying it are *NotLeaderError.
	ErrNotLeader = errors.New("raftgroup: not the leader")

	// ErrOutcomeUnknown reports that a command entered the log but this node lost leadership
	// (or the caller stopped waiting) before learning whether it committed. It must not be
	// retried blindly: it may have taken effect.
	ErrOutcomeUnknown = errors.New("raftgroup: outcome unknown")

	// ErrClosed reports that the group or manager has shut down.
	ErrClosed = errors.New("raftgroup: closed")

	// ErrUnrecoverable reports a durable replica whose state cannot be rebuilt from its
	// directory (no usable snapshot, and a log that does not start at the first entry).
	ErrUnrecoverable = errors.New("raftgroup: replica cannot be recovered from disk")
)

// NotLeaderError names the leader this replica knows of, if any, so the caller can go there.
type NotLeaderError struct {
	Group      int
	LeaderID   string // node ID; "" if unknown
	LeaderAddr string // host:port; "" if unknown
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("raftgroup: partition %d: not the leader, leader unknown", e.Group)
	}
	return fmt.Sprintf("raftgroup: partition %d: not the leader, leader is %s at %s", e.Group, e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
