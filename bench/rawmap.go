package main

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// rawShards is the baseline's shard count.
const rawShards = 256

var errRawMissing = errors.New("raw map: key not found")

// rawMap is the baseline: what an application would write by hand for one process, a sharded
// map with a read-write lock per shard that copies values in and out, as GridKV does.
type rawMap struct {
	shards [rawShards]rawShard
}

type rawShard struct {
	mu sync.RWMutex // guards m
	m  map[string][]byte
	_  [40]byte // keep neighbouring locks off one cache line
}

func newRawMap() *rawMap {
	r := &rawMap{}
	for i := range r.shards {
		r.shards[i].m = make(map[string][]byte)
	}
	return r
}

func (r *rawMap) shard(key string) *rawShard {
	return &r.shards[xxhash.Sum64String(key)%rawShards]
}

func (r *rawMap) get(_ context.Context, key string) ([]byte, error) {
	s := r.shard(key)
	s.mu.RLock()
	v, ok := s.m[key]
	var out []byte
	if ok {
		out = make([]byte, len(v))
		copy(out, v)
	}
	s.mu.RUnlock()
	if !ok {
		return nil, errRawMissing
	}
	return out, nil
}

func (r *rawMap) set(_ context.Context, key string, value []byte) error {
	v := make([]byte, len(value))
	copy(v, value)
	s := r.shard(key)
	s.mu.Lock()
	if _, ok := s.m[key]; !ok {
		key = strings.Clone(key) // the map owns its keys, as a store must
	}
	s.m[key] = v
	s.mu.Unlock()
	return nil
}
