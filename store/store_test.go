package store_test

import (
	"strings"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

func TestStorageOptionsDefaults(t *testing.T) {
	d := store.DefaultStorageOptions()
	if d.Backend != store.BackendMemorySharded || d.ShardCount != 256 || d.MaxMemoryMB != 0 ||
		d.HistoryEvents != 10000 || d.HistoryBytes != 8<<20 {
		t.Fatalf("DefaultStorageOptions() = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	o := store.StorageOptions{ShardCount: 16, MaxMemoryMB: 5}.WithDefaults()
	if o.ShardCount != 16 || o.MaxMemoryMB != 5 {
		t.Fatalf("WithDefaults overwrote set fields: %+v", o)
	}
	if err := (store.StorageOptions{}).Validate(); err != nil {
		t.Fatalf("zero options invalid: %v", err)
	}
}

func TestStorageOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts store.StorageOptions
		want string // substring of the error; "" for valid
	}{
		{store.StorageOptions{ShardCount: 1}, ""},
		{store.StorageOptions{ShardCount: 1 << 16}, ""},
		{store.StorageOptions{ShardCount: 100}, "ShardCount 100 is not a power of two"},
		{store.StorageOptions{ShardCount: -4}, "ShardCount -4 is negative"},
		{store.StorageOptions{ShardCount: 1 << 17}, "ShardCount 131072 exceeds"},
		{store.StorageOptions{Backend: store.BackendMemory, ShardCount: 100}, ""}, // ignored
		{store.StorageOptions{MaxMemoryMB: -1}, "MaxMemoryMB -1 is negative"},
		{store.StorageOptions{Backend: 7}, "Backend 7 is unknown"},
		{store.StorageOptions{HistoryEvents: 1, HistoryBytes: 1}, ""},
		{store.StorageOptions{HistoryEvents: -1}, "HistoryEvents -1 is negative"},
		{store.StorageOptions{HistoryBytes: -2}, "HistoryBytes -2 is negative"},
	} {
		err := tc.opts.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.opts, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want it to contain %q", tc.opts, err, tc.want)
		}
	}
}

func TestStringers(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{store.BackendMemorySharded.String(), "memory-sharded"},
		{store.BackendMemory.String(), "memory"},
		{store.Backend(9).String(), "Backend(9)"},
		{store.OpSet.String(), "Set"},
		{store.OpDelete.String(), "Delete"},
		{store.OpCAS.String(), "CAS"},
		{store.OpExpire.String(), "Expire"},
		{store.OpCompareAndDelete.String(), "CompareAndDelete"},
		{store.Op(0).String(), "Op(0)"},
		{store.EventPut.String(), "Put"},
		{store.EventDelete.String(), "Delete"},
		{store.EventExpire.String(), "Expire"},
		{store.EventType(0).String(), "EventType(0)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// Invalid shard counts are corrected rather than crashing NewPartition.
func TestNewPartitionCorrectsInvalidOptions(t *testing.T) {
	for _, opts := range []store.StorageOptions{
		{ShardCount: 100}, {ShardCount: -3}, {ShardCount: 1 << 20}, {Backend: 42},
		{HistoryEvents: -1, HistoryBytes: -1},
	} {
		p := store.NewPartition(opts, nil)
		set(t, p, 1, "k", "v")
		if v, _, ok := p.Get("k"); !ok || string(v) != "v" {
			t.Fatalf("%+v: Get = %q, %v", opts, v, ok)
		}
	}
}
