// Checks of TLS files before they are used, shared by agents and their clients: httplib says
// only that files did not load, and an expired certificate loads fine, then fails every
// handshake with a message that blames the CA.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>

#include "fanout/status.h"

namespace fanout::client {

struct X509Free {
  void operator()(X509* cert) const;
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The PEM certificate at `path`, called `what` in messages ("tls.cert", "the client
// certificate"): InvalidArgument when it cannot be read, holds no certificate, or is not valid
// now (expired, or not yet valid), saying which and since or until when.
Result<X509Ptr> ReadCertificate(const std::string& what, const std::string& path);

// Whether the PEM private key at `path` (called `what`) is usable with `cert` (called
// `cert_what`): InvalidArgument when it cannot be read, holds no key without a passphrase
// (OpenSSL would ask for one on the terminal and wait), or is not the certificate's.
Status CheckPrivateKey(const std::string& what, const std::string& path, X509* cert,
                       const std::string& cert_what);

}  // namespace fanout::client
