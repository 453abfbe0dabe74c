package raftgroup

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"
)

// ServerID is the Raft server ID of a node's incarnation: the node ID, a slash, and the
// incarnation in hex. Node IDs may themselves contain slashes; the last one separates.
func ServerID(nodeID string, incarnation uint64) raft.ServerID {
	return raft.ServerID(nodeID + "/" + strconv.FormatUint(incarnation, 16))
}

// ServerAddress is the Raft address of a node's incarnation: the node's host:port, a hash
// sign, and the incarnation in hex. The stream layer strips the suffix to dial and checks it
// on the accepting side.
func ServerAddress(addr string, incarnation uint64) raft.ServerAddress {
	return raft.ServerAddress(addr + "#" + strconv.FormatUint(incarnation, 16))
}

// NodeOf returns the node ID and incarnation encoded in a server ID.
func NodeOf(id raft.ServerID) (nodeID string, incarnation uint64) {
	s := string(id)
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return s, 0
	}
	inc, err := strconv.ParseUint(s[i+1:], 16, 64)
	if err != nil {
		return s, 0
	}
	return s[:i], inc
}

// SplitAddress returns the host:port and incarnation encoded in a server address.
func SplitAddress(addr raft.ServerAddress) (hostPort string, incarnation uint64, err error) {
	s := string(addr)
	i := strings.LastIndexByte(s, '#')
	if i < 0 {
		return "", 0, fmt.Errorf("raftgroup: server address %q has no incarnation", s)
	}
	inc, err := strconv.ParseUint(s[i+1:], 16, 64)
	if err != nil {
		return "", 0, fmt.Errorf("raftgroup: server address %q: bad incarnation: %w", s, err)
	}
	return s[:i], inc, nil
}
