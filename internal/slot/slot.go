// Package slot computes Redis Cluster hash slots and builds names that land
// in a chosen slot.
//
// Redis Cluster places a key (and, for sharded pub/sub, a channel) in one of
// 16384 slots: CRC16 (XMODEM) of the key, or of its hash tag (the bytes
// between the first '{' and the first '}' after it, when not empty), modulo
// 16384. Keys that one command or script touches together must share a
// slot; Colocated gives them one. A per-shard name (a barrier for sharded
// pub/sub) needs a name in a slot that shard owns; InSlot gives one.
package slot

import (
	"strconv"
	"strings"
	"sync"
)

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Of returns the slot of key, as Redis computes it (CLUSTER KEYSLOT).
func Of(key string) int { return int(crc16(hashed(key)) % Count) }

// hashed returns the part of key Redis hashes: its hash tag, or all of it.
func hashed(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Tag returns a hash tag body that puts a key in the same slot as name:
// name itself when it is not empty and contains no brace (the common case,
// readable in redis-cli), otherwise a short tag of name's slot (see InSlot).
// The result is never empty and never contains a brace.
func Tag(name string) string {
	if name != "" && !strings.ContainsAny(name, "{}") {
		return name
	}
	return tags()[Of(name)]
}

// Colocated returns prefix + "{" + Tag(name) + "}" + rest, a key in name's
// slot, when Tag(name) is name. When name is empty or has braces, the tag
// cannot be name itself, so name follows the tag to keep the key unique:
// prefix + "{" + tag + "}=" + name + rest (the "=" tells it from the key
// of a name equal to the tag).
func Colocated(prefix, name, rest string) string {
	tag := Tag(name)
	if tag == name {
		return prefix + "{" + name + "}" + rest
	}
	return prefix + "{" + tag + "}=" + name + rest
}

// InSlot returns name + "{" + tag + "}", a name in slot s (0 <= s < Count).
func InSlot(name string, s int) string { return name + "{" + tags()[s] + "}" }

// tags maps each slot to the shortest decimal string (then the first in
// counting order) that hashes to it; built once, in about a millisecond.
var tags = sync.OnceValue(func() *[Count]string {
	var t [Count]string
	left := Count
	for i := 0; left > 0; i++ {
		s := strconv.Itoa(i)
		if k := crc16(s) % Count; t[k] == "" {
			t[k] = s
			left--
		}
	}
	return &t
})

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), Redis's key hash.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
