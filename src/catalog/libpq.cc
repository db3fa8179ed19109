// The libpq functions Fanout calls, forwarding to libpq.so.5 loaded by LoadLibpq() (libpq.h says
// why). A function Fanout starts to use needs one FORWARD line here, or the link fails.
#include "catalog/libpq.h"

#include <dlfcn.h>
#include <libpq-fe.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace fanout::catalog {
namespace {

constexpr const char* kLibpq = "libpq.so.5";

struct Library {
  void* handle = nullptr;
  std::string error;  // why dlopen failed
};

const Library& Loaded() {
  static const Library library = [] {
    Library l;
    l.handle = dlopen(kLibpq, RTLD_NOW | RTLD_LOCAL);
    if (l.handle == nullptr) l.error = dlerror();
    return l;
  }();
  return library;
}

// A libpq function by name. Callers reach here only after LoadLibpq() succeeded (every libpq
// object comes from a connection start), so a miss is a build or packaging bug: say which, stop.
template <typename Fn>
Fn Resolve(Fn, const char* name) {
  const Library& library = Loaded();
  void* symbol = library.handle != nullptr ? dlsym(library.handle, name) : nullptr;
  if (symbol == nullptr) {
    std::fprintf(stderr, "fanout: internal error: %s not found in %s%s%s\n", name, kLibpq,
                 library.error.empty() ? "" : ": ", library.error.c_str());
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

}  // namespace

Status LoadLibpq() {
  const Library& library = Loaded();
  if (library.handle != nullptr) return Status::Ok();
  return FailedPrecondition(std::string("PostgreSQL support needs libpq (") + kLibpq +
                            "), which cannot be loaded: " + library.error +
                            "; install it with: apt-get install libpq5");
}

}  // namespace fanout::catalog

// `name` with its declared type, resolved on its first call (a thread-safe static).
#define FORWARD(ret, name, params, args)                                              \
  extern "C" ret name params {                                                      \
    static const auto real = ::fanout::catalog::Resolve(&::name, #name);            \
    return real args;                                                               \
  }

FORWARD(PGconn*, PQconnectdb, (const char* conninfo), (conninfo))
FORWARD(PGconn*, PQconnectdbParams,
        (const char* const* keywords, const char* const* values, int expand_dbname),
        (keywords, values, expand_dbname))
FORWARD(PGconn*, PQconnectStartParams,
        (const char* const* keywords, const char* const* values, int expand_dbname),
        (keywords, values, expand_dbname))
FORWARD(PostgresPollingStatusType, PQconnectPoll, (PGconn * conn), (conn))
FORWARD(PGPing, PQpingParams,
        (const char* const* keywords, const char* const* values, int expand_dbname),
        (keywords, values, expand_dbname))
FORWARD(void, PQfinish, (PGconn * conn), (conn))
FORWARD(void, PQreset, (PGconn * conn), (conn))
FORWARD(ConnStatusType, PQstatus, (const PGconn* conn), (conn))
FORWARD(PGTransactionStatusType, PQtransactionStatus, (const PGconn* conn), (conn))
FORWARD(int, PQserverVersion, (const PGconn* conn), (conn))
FORWARD(char*, PQerrorMessage, (const PGconn* conn), (conn))
FORWARD(int, PQsocket, (const PGconn* conn), (conn))
FORWARD(PQconninfoOption*, PQconninfo, (PGconn * conn), (conn))
FORWARD(void, PQconninfoFree, (PQconninfoOption * options), (options))
FORWARD(PQconninfoOption*, PQconninfoParse, (const char* conninfo, char** errmsg),
        (conninfo, errmsg))
FORWARD(PQnoticeProcessor, PQsetNoticeProcessor,
        (PGconn * conn, PQnoticeProcessor proc, void* arg), (conn, proc, arg))
FORWARD(PGcancel*, PQgetCancel, (PGconn * conn), (conn))
FORWARD(void, PQfreeCancel, (PGcancel * cancel), (cancel))
FORWARD(int, PQcancel, (PGcancel * cancel, char* errbuf, int errbufsize),
        (cancel, errbuf, errbufsize))
FORWARD(PGresult*, PQexec, (PGconn * conn, const char* query), (conn, query))
FORWARD(PGresult*, PQexecParams,
        (PGconn * conn, const char* command, int nParams, const Oid* paramTypes,
         const char* const* paramValues, const int* paramLengths, const int* paramFormats,
         int resultFormat),
        (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
         resultFormat))
FORWARD(int, PQsendQuery, (PGconn * conn, const char* query), (conn, query))
FORWARD(int, PQsendPrepare,
        (PGconn * conn, const char* stmtName, const char* query, int nParams,
         const Oid* paramTypes),
        (conn, stmtName, query, nParams, paramTypes))
FORWARD(int, PQsendQueryPrepared,
        (PGconn * conn, const char* stmtName, int nParams, const char* const* paramValues,
         const int* paramLengths, const int* paramFormats, int resultFormat),
        (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat))
FORWARD(int, PQsendDescribePrepared, (PGconn * conn, const char* stmt), (conn, stmt))
FORWARD(PGresult*, PQgetResult, (PGconn * conn), (conn))
FORWARD(int, PQisBusy, (PGconn * conn), (conn))
FORWARD(int, PQconsumeInput, (PGconn * conn), (conn))
FORWARD(int, PQputCopyData, (PGconn * conn, const char* buffer, int nbytes),
        (conn, buffer, nbytes))
FORWARD(int, PQputCopyEnd, (PGconn * conn, const char* errormsg), (conn, errormsg))
FORWARD(int, PQgetCopyData, (PGconn * conn, char** buffer, int async), (conn, buffer, async))
FORWARD(ExecStatusType, PQresultStatus, (const PGresult* res), (res))
FORWARD(char*, PQresultErrorMessage, (const PGresult* res), (res))
FORWARD(char*, PQresultErrorField, (const PGresult* res, int fieldcode), (res, fieldcode))
FORWARD(int, PQntuples, (const PGresult* res), (res))
FORWARD(int, PQnfields, (const PGresult* res), (res))
FORWARD(int, PQnparams, (const PGresult* res), (res))
FORWARD(char*, PQfname, (const PGresult* res, int field_num), (res, field_num))
FORWARD(Oid, PQftype, (const PGresult* res, int field_num), (res, field_num))
FORWARD(char*, PQgetvalue, (const PGresult* res, int tup_num, int field_num),
        (res, tup_num, field_num))
FORWARD(int, PQgetlength, (const PGresult* res, int tup_num, int field_num),
        (res, tup_num, field_num))
FORWARD(int, PQgetisnull, (const PGresult* res, int tup_num, int field_num),
        (res, tup_num, field_num))
FORWARD(char*, PQcmdStatus, (PGresult * res), (res))
FORWARD(char*, PQcmdTuples, (PGresult * res), (res))
FORWARD(void, PQclear, (PGresult * res), (res))
FORWARD(void, PQfreemem, (void* ptr), (ptr))
FORWARD(unsigned char*, PQunescapeBytea, (const unsigned char* strtext, size_t* retbuflen),
        (strtext, retbuflen))
