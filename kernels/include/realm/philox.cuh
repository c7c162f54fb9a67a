// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011): a keyed bijection of 128-bit counters, the
// same function as `Philox4x32::block` in src/rng.rs and Random123's philox4x32_10, so a kernel and
// the host draw identical bits for identical (key, counter).
#pragma once

struct Philox4 {
  unsigned v[4];
};

REALM_DEVICE Philox4 philox4x32_10(Philox4 c, unsigned k0, unsigned k1) {
  const unsigned m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const unsigned long long p0 = static_cast<unsigned long long>(m0) * c.v[0];
    const unsigned long long p1 = static_cast<unsigned long long>(m1) * c.v[2];
    c = Philox4{{static_cast<unsigned>(p1 >> 32) ^ c.v[1] ^ k0, static_cast<unsigned>(p1),
                 static_cast<unsigned>(p0 >> 32) ^ c.v[3] ^ k1, static_cast<unsigned>(p0)}};
  }
  return c;
}
