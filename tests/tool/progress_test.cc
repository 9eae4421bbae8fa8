// The progress line and the per-layer report's totals, CSV and JSON.
#include "progress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "layer_report.h"

namespace nibble::tool {
namespace {

TEST(ProgressLine, ShowsCountPercentBytesSpeedEtaAndName) {
  // 100 MB of 400 MB after 2 s: 50 MB/s, 300 MB left -> 6 s.
  const std::string line =
      Progress::Line(4, 12, 100'000'000, 400'000'000, 2.0,
                     "model.layers.0.mlp.up_proj.weight", 120);
  EXPECT_EQ(line,
            "[ 5/12]  25%  100.00 MB / 400.00 MB  50.00 MB/s  ETA 0:06  "
            "model.layers.0.mlp.up_proj.weight");
}

TEST(ProgressLine, NoSpeedOrEtaBeforeAnyData) {
  const std::string line = Progress::Line(0, 3, 0, 1000, 0.0, "a.weight", 80);
  EXPECT_EQ(line, "[1/3]   0%  0 B / 1.0 kB  ETA --:--  a.weight");
}

TEST(ProgressLine, LongNameIsCutFromTheLeftToFitTheWidth) {
  const std::string name(200, 'x');
  for (int width : {40, 60, 80, 200}) {
    const std::string line =
        Progress::Line(0, 1, 0, 10, 0.0, name + ".weight", width);
    EXPECT_LE(line.size(), static_cast<size_t>(width - 1)) << width;
    if (width >= 60) {
      EXPECT_NE(line.find("...x"), std::string::npos) << line;
      EXPECT_EQ(line.substr(line.size() - 7), ".weight") << line;
    }
  }
}

TEST(ProgressLine, EtaPastAnHourAndPercentNeverAbove100) {
  // 1 MB in 10 s -> 0.1 MB/s; 999 MB left -> 9990 s = 2:46:30.
  EXPECT_NE(Progress::Line(0, 2, 1'000'000, 1'000'000'000, 10.0, "w", 120)
                .find("ETA 2:46:30"),
            std::string::npos);
  EXPECT_NE(Progress::Line(1, 2, 2000, 1000, 1.0, "w", 120).find(" 100%"),
            std::string::npos);
}

TEST(ProgressBar, DrawsInPlaceAndClearsTheLine) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("converted", 2, 100, Progress::Mode::kBar, f, 80);
    p.Start(0, 0, "first.weight");
    p.Start(1, 50, "second.weight");  // within 0.1 s: not redrawn
    p.Clear();
  }
  std::rewind(f);
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const std::string out(buf, n);
  EXPECT_EQ(out.rfind("\r[1/2]", 0), 0u) << out;
  EXPECT_NE(out.find("first.weight\x1b[K"), std::string::npos) << out;
  EXPECT_EQ(out.find("second.weight"), std::string::npos) << out;
  EXPECT_EQ(out.substr(out.size() - 4), "\r\x1b[K") << out;
}

TEST(ProgressBar, OffModeWritesNothing) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("converted", 2, 100, Progress::Mode::kOff, f, 80);
    p.Start(0, 0, "first.weight");
    p.Clear();
  }
  EXPECT_EQ(std::ftell(f), 0);
  std::fclose(f);
}

LayerRow Quantized(const std::string& name, int64_t params, double snr) {
  LayerRow r;
  r.name = name;
  r.shape = {params / 4, 4};
  r.params = params;
  r.scheme = "int4-g128";
  r.bytes_in = params * 2;
  r.bytes_out = params / 2;
  r.quantized = true;
  r.m.snr_db = snr;
  return r;
}

TEST(LayerTotals, ParamWeightedMeanAndWorstSkipKeptAndExactTensors) {
  std::vector<LayerRow> rows;
  rows.push_back(Quantized("a", 100, 10));
  rows.push_back(Quantized("b", 300, 20));
  rows.push_back(KeptRow("norm", {4}, 4, 8, 16));
  // An all-zero weight quantizes exactly: infinite SNR, not in the mean.
  rows.push_back(
      Quantized("zero", 400, std::numeric_limits<double>::infinity()));
  const LayerTotals t = ComputeTotals(rows);
  EXPECT_EQ(t.tensors, 4);
  EXPECT_EQ(t.quantized, 3);
  EXPECT_EQ(t.params, 804);
  EXPECT_EQ(t.params_quantized, 400);
  EXPECT_DOUBLE_EQ(t.mean_snr_db, (10.0 * 100 + 20.0 * 300) / 400);
  EXPECT_EQ(t.worst, "a");
  EXPECT_EQ(t.bytes_in, 200 + 600 + 8 + 800);
  EXPECT_EQ(t.bytes_out, 50 + 150 + 8 + 200);
}

TEST(LayerReport, CsvQuotesNamesAndLeavesInfiniteSnrEmpty) {
  std::vector<LayerRow> rows;
  rows.push_back(KeptRow("we\"ird,name", {2, 3}, 6, 12, 16));
  const std::string csv = LayerCsv(rows);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "name,shape,params,scheme,bits_per_weight,bytes_in,bytes_out,rmse,"
            "max_abs_error,snr_db,cosine");
  EXPECT_NE(csv.find("\n\"we\"\"ird,name\",2x3,6,keep,16,12,12,0,0,,1\n"),
            std::string::npos)
      << csv;
}

TEST(LayerReport, JsonHasTheDocumentedKeysAndNullForInfinity) {
  const nlohmann::ordered_json j = LayerRowJson(KeptRow("n", {3}, 3, 6, 16));
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "name", "shape", "params", "scheme", "bits_per_weight",
                      "bytes_in", "bytes_out", "rmse", "max_abs_error",
                      "snr_db", "cosine"}));
  EXPECT_TRUE(j["snr_db"].is_null());
  EXPECT_EQ(j["cosine"], 1.0);
}

}  // namespace
}  // namespace nibble::tool
