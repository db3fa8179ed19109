// Checks of TLS files before they are used (tls_files.h).
#include "client/tls_files.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace fanout::client {

void X509Free::operator()(X509* cert) const { X509_free(cert); }

namespace {

std::string Day(const ASN1_TIME* time) {
  std::tm tm{};
  ASN1_TIME_to_tm(time, &tm);
  return fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

}  // namespace

Result<X509Ptr> ReadCertificate(const std::string& what, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) {
    return InvalidArgument(fmt::format("cannot read {} {}: {}", what, path, std::strerror(errno)));
  }
  X509Ptr cert(PEM_read_X509(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  ERR_clear_error();
  if (!cert) return InvalidArgument(fmt::format("{} {} holds no PEM certificate", what, path));
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    return InvalidArgument(fmt::format("{} {} expired on {}; every peer would refuse it: renew it",
                                       what, path, Day(X509_get0_notAfter(cert.get()))));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
    return InvalidArgument(fmt::format("{} {} is not valid before {}; check this machine's clock",
                                       what, path, Day(X509_get0_notBefore(cert.get()))));
  }
  return cert;
}

Status CheckPrivateKey(const std::string& what, const std::string& path, X509* cert,
                       const std::string& cert_what) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) {
    return InvalidArgument(fmt::format("cannot read {} {}: {}", what, path, std::strerror(errno)));
  }
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* key = PEM_read_PrivateKey(file, nullptr, no_passphrase, nullptr);
  std::fclose(file);
  if (key == nullptr) {
    ERR_clear_error();
    return InvalidArgument(
        fmt::format("{} {} holds no PEM private key (without a passphrase)", what, path));
  }
  bool matches = X509_check_private_key(cert, key) == 1;
  EVP_PKEY_free(key);
  ERR_clear_error();
  if (!matches) {
    return InvalidArgument(fmt::format("{} {} is not the key of {}", what, path, cert_what));
  }
  return Status::Ok();
}

}  // namespace fanout::client
