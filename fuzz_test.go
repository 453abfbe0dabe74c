package gridkv_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// FuzzSetGet drives the public API with arbitrary keys and values, including empty, oversized
// and invalid UTF-8 ones: Set either succeeds, and then Get returns exactly the value, or fails
// with gridkv.ErrInvalidKey or gridkv.ErrValueTooLarge as the limits say.
func FuzzSetGet(f *testing.F) {
	f.Add("k", []byte("v"), false, false)
	f.Add("", []byte("v"), false, false)
	f.Add("k", []byte{}, false, false)
	f.Add("k", []byte(nil), false, false)
	f.Add("\xff\xfe\x00bad utf-8", []byte{0, 0xff}, false, false)
	f.Add("long", []byte("v"), true, false)
	f.Add("big", []byte("v"), false, true)
	f.Add("", []byte("v"), false, true)
	f.Add(strings.Repeat("x", gridkv.MaxKeySize), []byte("edge"), false, false)

	kv := cluster.Start(f, 1, cluster.Options{}).Node(0).KV
	f.Fuzz(func(t *testing.T, key string, value []byte, longKey, bigValue bool) {
		if longKey {
			key += strings.Repeat("k", gridkv.MaxKeySize+1-min(len(key), gridkv.MaxKeySize))
		}
		if bigValue {
			value = append(value, make([]byte, gridkv.MaxValueSize+1-min(len(value), gridkv.MaxValueSize))...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kept := bytes.Clone(value)
		err := kv.Set(ctx, key, value)
		switch {
		case key == "" || len(key) > gridkv.MaxKeySize:
			if !errors.Is(err, gridkv.ErrInvalidKey) {
				t.Fatalf("Set with a %d-byte key: err = %v, want gridkv.ErrInvalidKey", len(key), err)
			}
			if _, err := kv.Get(ctx, key); !errors.Is(err, gridkv.ErrInvalidKey) {
				t.Fatalf("Get with a %d-byte key: err = %v, want gridkv.ErrInvalidKey", len(key), err)
			}
			return
		case len(value) > gridkv.MaxValueSize:
			if !errors.Is(err, gridkv.ErrValueTooLarge) {
				t.Fatalf("Set of a %d-byte value: err = %v, want gridkv.ErrValueTooLarge", len(value), err)
			}
			return
		case err != nil:
			t.Fatalf("Set(%q, %d bytes): %v", key, len(value), err)
		}
		for i := range value {
			value[i] ^= 0xff // the stored value must be a copy
		}
		got, err := kv.Get(ctx, key)
		if err != nil || !bytes.Equal(got, kept) {
			t.Fatalf("Get(%q) = %d bytes, %v; want the %d bytes set", key, len(got), err, len(kept))
		}
		e, err := kv.GetEntry(ctx, key, gridkv.WithConsistency(gridkv.Stale))
		if err != nil || !bytes.Equal(e.Value, kept) || e.Version == 0 {
			t.Fatalf("stale GetEntry(%q) = %d bytes at version %d, %v", key, len(e.Value), e.Version, err)
		}
		if err := kv.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		if _, err := kv.Get(ctx, key); !errors.Is(err, gridkv.ErrKeyNotFound) {
			t.Fatalf("Get after Delete(%q): %v, want gridkv.ErrKeyNotFound", key, err)
		}
	})
}
