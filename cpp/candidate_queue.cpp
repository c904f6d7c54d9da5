#include "candidate_queue.h"

#include <cctype>
#include <cstdarg>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace mdmonitor {

namespace {

const char *const STAGES[] = {"pending", "done", "failed", "skipped"};  // as in candidates.py
const char *const MANIFEST_COLUMNS =
    "when,box,event,source_step,centre_index,centre_local_uncertainty,strategy,atoms,"
    "core_atoms,relaxation,detail\n";

std::string format(const char *pattern, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *pattern, ...)
{
  char buffer[512];
  va_list args;
  va_start(args, pattern);
  std::vsnprintf(buffer, sizeof(buffer), pattern, args);
  va_end(args);
  return buffer;
}

std::string quoted(const std::string &value)
{
  return value.find(' ') == std::string::npos ? value : "\"" + value + "\"";
}

std::string csv_field(const std::string &value)
{
  if (value.find_first_of(",\"\n") == std::string::npos) return value;
  std::string escaped = "\"";
  for (char c : value) escaped += c == '"' ? std::string("\"\"") : std::string(1, c);
  return escaped + "\"";
}

std::string value_of(const Info &info, const std::string &key)
{
  for (const auto &[k, v] : info)
    if (k == key) return v;
  return "";
}

void fail(const std::string &what, const std::string &path)
{
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

// write all of `text` to `descriptor` and flush it to disk
void write_all(int descriptor, const std::string &text, const std::string &path)
{
  if (write(descriptor, text.data(), text.size()) != (ssize_t) text.size() ||
      fsync(descriptor) != 0)
    fail("cannot write", path);
}

}    // namespace

bool valid_run_id(const std::string &run_id)
{
  if (run_id.empty() || !std::isalnum((unsigned char) run_id[0])) return false;
  for (char c : run_id)
    if (!std::isalnum((unsigned char) c) && c != '.' && c != '-') return false;
  return true;
}

std::string box_name(const std::string &run_id, int64_t step, int64_t centre, int sample)
{
  return run_id + format("_step%09lld_atom%07lld_s%02d.extxyz", (long long) step,
                         (long long) centre, sample);
}

std::string extxyz_text(const CubeBox &box, const Info &info)
{
  const double L = box.length;
  std::string text = format("%zu\n", box.atoms.size());
  text += format("Lattice=\"%.17g 0.0 0.0 0.0 %.17g 0.0 0.0 0.0 %.17g\" ", L, L, L);
  text += "Properties=species:S:1:pos:R:3:core_mask:L:1:source_index:I:1:source_image:I:3";
  for (const auto &[key, value] : info) text += " " + key + "=" + quoted(value);
  text += " pbc=\"T T T\"\n";
  for (size_t k = 0; k < box.atoms.size(); ++k) {
    const Nearby &atom = box.atoms[k];
    const Vec3 &d = atom.displacement;
    text += format("%-2s %.17g %.17g %.17g %c %lld %d %d %d\n", element_symbol(atom.number),
                   d[0] + 0.5 * L, d[1] + 0.5 * L, d[2] + 0.5 * L, box.core[k] ? 'T' : 'F',
                   (long long) atom.index, atom.image[0], atom.image[1], atom.image[2]);
  }
  return text;
}

CandidateQueue::CandidateQueue(const std::string &root_) : root(root_)
{
  std::error_code err;
  for (const char *stage : STAGES) {
    fs::create_directories(fs::path(root) / stage, err);
    if (err) throw std::runtime_error("cannot create queue directory '" + root + "/" + stage +
                                      "': " + err.message());
  }
  const std::string manifest = root + "/manifest.csv";
  const int descriptor = open(manifest.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (descriptor >= 0) {
    write_all(descriptor, MANIFEST_COLUMNS, manifest);
    close(descriptor);
  } else if (errno != EEXIST) {
    fail("cannot create", manifest);
  }
}

bool CandidateQueue::contains(const std::string &name) const
{
  for (const char *stage : STAGES)
    if (fs::exists(fs::path(root) / stage / name)) return true;
  return false;
}

int CandidateQueue::count(const std::string &run_id) const
{
  const std::string prefix = run_id + "_step";
  int n = 0;
  for (const char *stage : STAGES)
    for (const auto &entry : fs::directory_iterator(fs::path(root) / stage)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && entry.path().extension() == ".extxyz") ++n;
    }
  return n;
}

void CandidateQueue::write_pending(const std::string &name, const CubeBox &box,
                                   const Info &info) const
{
  const std::string path = root + "/pending/" + name;
  const std::string temporary = format("%s/pending/.%s.%d.tmp", root.c_str(), name.c_str(),
                                       (int) getpid());
  const int descriptor = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (descriptor < 0) fail("cannot create", temporary);
  write_all(descriptor, extxyz_text(box, info), temporary);
  close(descriptor);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    fail("cannot rename to", path);
  }

  char when[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S+00:00", std::gmtime(&now));
  int core = 0;
  for (bool c : box.core) core += c;
  std::string line = std::string(when) + "," + csv_field(name) + ",written";
  for (const char *key : {"source_step", "centre_index", "centre_local_uncertainty", "strategy"})
    line += "," + csv_field(value_of(info, key));
  line += format(",%zu,%d,", box.atoms.size(), core) + csv_field(value_of(info, "relaxation")) +
      ",\n";
  const std::string manifest = root + "/manifest.csv";
  const int log = open(manifest.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (log < 0) fail("cannot append to", manifest);
  write_all(log, line, manifest);    // one write: concurrent appenders never interleave
  close(log);
}

}    // namespace mdmonitor
