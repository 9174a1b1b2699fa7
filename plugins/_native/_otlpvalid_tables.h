/* The message tables of the C walk (_otlpvalid.c). Generated from the OTLP descriptors
 * of opentelemetry-proto 1.45.1 by
 * `python -m pipeline._otlpvalid > plugins/_native/_otlpvalid_tables.h`: do not edit
 * (tests/plugins/_native/test_otlpvalid.py checks it is current). */

static const pbmsg M_collector_trace_v1_ExportTraceServiceRequest;
static const pbmsg M_trace_v1_ResourceSpans;
static const pbmsg M_resource_v1_Resource;
static const pbmsg M_common_v1_KeyValue;
static const pbmsg M_common_v1_AnyValue;
static const pbmsg M_common_v1_ArrayValue;
static const pbmsg M_common_v1_KeyValueList;
static const pbmsg M_common_v1_EntityRef;
static const pbmsg M_trace_v1_ScopeSpans;
static const pbmsg M_common_v1_InstrumentationScope;
static const pbmsg M_trace_v1_Span;
static const pbmsg M_trace_v1_Span_Event;
static const pbmsg M_trace_v1_Span_Link;
static const pbmsg M_trace_v1_Status;
static const pbmsg M_collector_metrics_v1_ExportMetricsServiceRequest;
static const pbmsg M_metrics_v1_ResourceMetrics;
static const pbmsg M_metrics_v1_ScopeMetrics;
static const pbmsg M_metrics_v1_Metric;
static const pbmsg M_metrics_v1_Gauge;
static const pbmsg M_metrics_v1_NumberDataPoint;
static const pbmsg M_metrics_v1_Exemplar;
static const pbmsg M_metrics_v1_Sum;
static const pbmsg M_metrics_v1_Histogram;
static const pbmsg M_metrics_v1_HistogramDataPoint;
static const pbmsg M_metrics_v1_ExponentialHistogram;
static const pbmsg M_metrics_v1_ExponentialHistogramDataPoint;
static const pbmsg M_metrics_v1_ExponentialHistogramDataPoint_Buckets;
static const pbmsg M_metrics_v1_Summary;
static const pbmsg M_metrics_v1_SummaryDataPoint;
static const pbmsg M_metrics_v1_SummaryDataPoint_ValueAtQuantile;
static const pbmsg M_collector_logs_v1_ExportLogsServiceRequest;
static const pbmsg M_logs_v1_ResourceLogs;
static const pbmsg M_logs_v1_ScopeLogs;
static const pbmsg M_logs_v1_LogRecord;

static const pbfield F_collector_trace_v1_ExportTraceServiceRequest[] = {
    {"resource_spans", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_trace_v1_ResourceSpans},
};
static const int8_t N_collector_trace_v1_ExportTraceServiceRequest[2] = {-1, 0};
static const pbmsg M_collector_trace_v1_ExportTraceServiceRequest = {"ExportTraceServiceRequest", 1, N_collector_trace_v1_ExportTraceServiceRequest, F_collector_trace_v1_ExportTraceServiceRequest, 1, 0, NULL};

static const pbfield F_trace_v1_ResourceSpans[] = {
    {"resource", 1, K_MESSAGE, 0, 0, -1, &M_resource_v1_Resource},
    {"scope_spans", 2, K_MESSAGE, PF_REPEATED, 0, -1, &M_trace_v1_ScopeSpans},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_ResourceSpans[4] = {-1, 0, 1, 2};
static const pbmsg M_trace_v1_ResourceSpans = {"ResourceSpans", 3, N_trace_v1_ResourceSpans, F_trace_v1_ResourceSpans, 3, 0, NULL};

static const pbfield F_resource_v1_Resource[] = {
    {"attributes", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 2, K_VARINT, 0, 0, -1, NULL},
    {"entity_refs", 3, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_EntityRef},
};
static const int8_t N_resource_v1_Resource[4] = {-1, 0, 1, 2};
static const pbmsg M_resource_v1_Resource = {"Resource", 3, N_resource_v1_Resource, F_resource_v1_Resource, 3, 0, NULL};

static const pbfield F_common_v1_KeyValue[] = {
    {"key", 1, K_STRING, 0, 0, -1, NULL},
    {"value", 2, K_MESSAGE, 0, 0, -1, &M_common_v1_AnyValue},
    {"key_strindex", 3, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_common_v1_KeyValue[4] = {-1, 0, 1, 2};
static const pbmsg M_common_v1_KeyValue = {"KeyValue", 3, N_common_v1_KeyValue, F_common_v1_KeyValue, 3, 0, NULL};

static const pbfield F_common_v1_AnyValue[] = {
    {"string_value", 1, K_STRING, 0, 0, -1, NULL},
    {"bool_value", 2, K_VARINT, 0, 0, -1, NULL},
    {"int_value", 3, K_VARINT, 0, 0, -1, NULL},
    {"double_value", 4, K_FIXED64, 0, 0, -1, NULL},
    {"array_value", 5, K_MESSAGE, 0, 0, -1, &M_common_v1_ArrayValue},
    {"kvlist_value", 6, K_MESSAGE, 0, 0, -1, &M_common_v1_KeyValueList},
    {"bytes_value", 7, K_BYTES, 0, 0, -1, NULL},
    {"string_value_strindex", 8, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_common_v1_AnyValue[9] = {-1, 0, 1, 2, 3, 4, 5, 6, 7};
static const pbmsg M_common_v1_AnyValue = {"AnyValue", 8, N_common_v1_AnyValue, F_common_v1_AnyValue, 8, 0, NULL};

static const pbfield F_common_v1_ArrayValue[] = {
    {"values", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_AnyValue},
};
static const int8_t N_common_v1_ArrayValue[2] = {-1, 0};
static const pbmsg M_common_v1_ArrayValue = {"ArrayValue", 1, N_common_v1_ArrayValue, F_common_v1_ArrayValue, 1, 0, NULL};

static const pbfield F_common_v1_KeyValueList[] = {
    {"values", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
};
static const int8_t N_common_v1_KeyValueList[2] = {-1, 0};
static const pbmsg M_common_v1_KeyValueList = {"KeyValueList", 1, N_common_v1_KeyValueList, F_common_v1_KeyValueList, 1, 0, NULL};

static const pbfield F_common_v1_EntityRef[] = {
    {"schema_url", 1, K_STRING, 0, 0, -1, NULL},
    {"type", 2, K_STRING, 0, 0, -1, NULL},
    {"id_keys", 3, K_STRING, PF_REPEATED, 0, -1, NULL},
    {"description_keys", 4, K_STRING, PF_REPEATED, 0, -1, NULL},
};
static const int8_t N_common_v1_EntityRef[5] = {-1, 0, 1, 2, 3};
static const pbmsg M_common_v1_EntityRef = {"EntityRef", 4, N_common_v1_EntityRef, F_common_v1_EntityRef, 4, 0, NULL};

static const pbfield F_trace_v1_ScopeSpans[] = {
    {"scope", 1, K_MESSAGE, 0, 0, -1, &M_common_v1_InstrumentationScope},
    {"spans", 2, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_trace_v1_Span},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_ScopeSpans[4] = {-1, 0, 1, 2};
static const pbmsg M_trace_v1_ScopeSpans = {"ScopeSpans", 3, N_trace_v1_ScopeSpans, F_trace_v1_ScopeSpans, 3, 0, NULL};

static const pbfield F_common_v1_InstrumentationScope[] = {
    {"name", 1, K_STRING, 0, 0, -1, NULL},
    {"version", 2, K_STRING, 0, 0, -1, NULL},
    {"attributes", 3, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 4, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_common_v1_InstrumentationScope[5] = {-1, 0, 1, 2, 3};
static const pbmsg M_common_v1_InstrumentationScope = {"InstrumentationScope", 4, N_common_v1_InstrumentationScope, F_common_v1_InstrumentationScope, 4, 0, NULL};

static const pbfield F_trace_v1_Span[] = {
    {"trace_id", 1, K_BYTES, 0, 16, 0, NULL},
    {"span_id", 2, K_BYTES, 0, 8, 1, NULL},
    {"trace_state", 3, K_STRING, 0, 0, -1, NULL},
    {"parent_span_id", 4, K_BYTES, PF_ID_OPTIONAL, 8, 2, NULL},
    {"name", 5, K_STRING, 0, 0, -1, NULL},
    {"kind", 6, K_VARINT, 0, 0, -1, NULL},
    {"start_time_unix_nano", 7, K_FIXED64, 0, 0, -1, NULL},
    {"end_time_unix_nano", 8, K_FIXED64, 0, 0, -1, NULL},
    {"attributes", 9, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 10, K_VARINT, 0, 0, -1, NULL},
    {"events", 11, K_MESSAGE, PF_REPEATED, 0, -1, &M_trace_v1_Span_Event},
    {"dropped_events_count", 12, K_VARINT, 0, 0, -1, NULL},
    {"links", 13, K_MESSAGE, PF_REPEATED, 0, -1, &M_trace_v1_Span_Link},
    {"dropped_links_count", 14, K_VARINT, 0, 0, -1, NULL},
    {"status", 15, K_MESSAGE, 0, 0, -1, &M_trace_v1_Status},
    {"flags", 16, K_FIXED32, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_Span[17] = {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const int8_t I_trace_v1_Span[3] = {0, 1, 3};
static const pbmsg M_trace_v1_Span = {"Span", 16, N_trace_v1_Span, F_trace_v1_Span, 16, 3, I_trace_v1_Span};

static const pbfield F_trace_v1_Span_Event[] = {
    {"time_unix_nano", 1, K_FIXED64, 0, 0, -1, NULL},
    {"name", 2, K_STRING, 0, 0, -1, NULL},
    {"attributes", 3, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 4, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_Span_Event[5] = {-1, 0, 1, 2, 3};
static const pbmsg M_trace_v1_Span_Event = {"Event", 4, N_trace_v1_Span_Event, F_trace_v1_Span_Event, 4, 0, NULL};

static const pbfield F_trace_v1_Span_Link[] = {
    {"trace_id", 1, K_BYTES, 0, 16, 0, NULL},
    {"span_id", 2, K_BYTES, 0, 8, 1, NULL},
    {"trace_state", 3, K_STRING, 0, 0, -1, NULL},
    {"attributes", 4, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 5, K_VARINT, 0, 0, -1, NULL},
    {"flags", 6, K_FIXED32, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_Span_Link[7] = {-1, 0, 1, 2, 3, 4, 5};
static const int8_t I_trace_v1_Span_Link[2] = {0, 1};
static const pbmsg M_trace_v1_Span_Link = {"Link", 6, N_trace_v1_Span_Link, F_trace_v1_Span_Link, 6, 2, I_trace_v1_Span_Link};

static const pbfield F_trace_v1_Status[] = {
    {"message", 2, K_STRING, 0, 0, -1, NULL},
    {"code", 3, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_trace_v1_Status[4] = {-1, -1, 0, 1};
static const pbmsg M_trace_v1_Status = {"Status", 3, N_trace_v1_Status, F_trace_v1_Status, 2, 0, NULL};

static const pbfield F_collector_metrics_v1_ExportMetricsServiceRequest[] = {
    {"resource_metrics", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_ResourceMetrics},
};
static const int8_t N_collector_metrics_v1_ExportMetricsServiceRequest[2] = {-1, 0};
static const pbmsg M_collector_metrics_v1_ExportMetricsServiceRequest = {"ExportMetricsServiceRequest", 1, N_collector_metrics_v1_ExportMetricsServiceRequest, F_collector_metrics_v1_ExportMetricsServiceRequest, 1, 0, NULL};

static const pbfield F_metrics_v1_ResourceMetrics[] = {
    {"resource", 1, K_MESSAGE, 0, 0, -1, &M_resource_v1_Resource},
    {"scope_metrics", 2, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_ScopeMetrics},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_ResourceMetrics[4] = {-1, 0, 1, 2};
static const pbmsg M_metrics_v1_ResourceMetrics = {"ResourceMetrics", 3, N_metrics_v1_ResourceMetrics, F_metrics_v1_ResourceMetrics, 3, 0, NULL};

static const pbfield F_metrics_v1_ScopeMetrics[] = {
    {"scope", 1, K_MESSAGE, 0, 0, -1, &M_common_v1_InstrumentationScope},
    {"metrics", 2, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_Metric},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_ScopeMetrics[4] = {-1, 0, 1, 2};
static const pbmsg M_metrics_v1_ScopeMetrics = {"ScopeMetrics", 3, N_metrics_v1_ScopeMetrics, F_metrics_v1_ScopeMetrics, 3, 0, NULL};

static const pbfield F_metrics_v1_Metric[] = {
    {"name", 1, K_STRING, 0, 0, -1, NULL},
    {"description", 2, K_STRING, 0, 0, -1, NULL},
    {"unit", 3, K_STRING, 0, 0, -1, NULL},
    {"gauge", 5, K_MESSAGE, PF_ONEOF, 0, -1, &M_metrics_v1_Gauge},
    {"sum", 7, K_MESSAGE, PF_ONEOF, 0, -1, &M_metrics_v1_Sum},
    {"histogram", 9, K_MESSAGE, PF_ONEOF, 0, -1, &M_metrics_v1_Histogram},
    {"exponential_histogram", 10, K_MESSAGE, PF_ONEOF, 0, -1, &M_metrics_v1_ExponentialHistogram},
    {"summary", 11, K_MESSAGE, PF_ONEOF, 0, -1, &M_metrics_v1_Summary},
    {"metadata", 12, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
};
static const int8_t N_metrics_v1_Metric[13] = {-1, 0, 1, 2, -1, 3, -1, 4, -1, 5, 6, 7, 8};
static const pbmsg M_metrics_v1_Metric = {"Metric", 12, N_metrics_v1_Metric, F_metrics_v1_Metric, 9, 0, NULL};

static const pbfield F_metrics_v1_Gauge[] = {
    {"data_points", 1, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_metrics_v1_NumberDataPoint},
};
static const int8_t N_metrics_v1_Gauge[2] = {-1, 0};
static const pbmsg M_metrics_v1_Gauge = {"Gauge", 1, N_metrics_v1_Gauge, F_metrics_v1_Gauge, 1, 0, NULL};

static const pbfield F_metrics_v1_NumberDataPoint[] = {
    {"start_time_unix_nano", 2, K_FIXED64, 0, 0, -1, NULL},
    {"time_unix_nano", 3, K_FIXED64, 0, 0, -1, NULL},
    {"as_double", 4, K_FIXED64, 0, 0, -1, NULL},
    {"exemplars", 5, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_Exemplar},
    {"as_int", 6, K_FIXED64, 0, 0, -1, NULL},
    {"attributes", 7, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"flags", 8, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_NumberDataPoint[9] = {-1, -1, 0, 1, 2, 3, 4, 5, 6};
static const pbmsg M_metrics_v1_NumberDataPoint = {"NumberDataPoint", 8, N_metrics_v1_NumberDataPoint, F_metrics_v1_NumberDataPoint, 7, 0, NULL};

static const pbfield F_metrics_v1_Exemplar[] = {
    {"time_unix_nano", 2, K_FIXED64, 0, 0, -1, NULL},
    {"as_double", 3, K_FIXED64, 0, 0, -1, NULL},
    {"span_id", 4, K_BYTES, PF_ID_OPTIONAL, 8, 0, NULL},
    {"trace_id", 5, K_BYTES, PF_ID_OPTIONAL, 16, 1, NULL},
    {"as_int", 6, K_FIXED64, 0, 0, -1, NULL},
    {"filtered_attributes", 7, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
};
static const int8_t N_metrics_v1_Exemplar[8] = {-1, -1, 0, 1, 2, 3, 4, 5};
static const int8_t I_metrics_v1_Exemplar[2] = {2, 3};
static const pbmsg M_metrics_v1_Exemplar = {"Exemplar", 7, N_metrics_v1_Exemplar, F_metrics_v1_Exemplar, 6, 2, I_metrics_v1_Exemplar};

static const pbfield F_metrics_v1_Sum[] = {
    {"data_points", 1, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_metrics_v1_NumberDataPoint},
    {"aggregation_temporality", 2, K_VARINT, 0, 0, -1, NULL},
    {"is_monotonic", 3, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_Sum[4] = {-1, 0, 1, 2};
static const pbmsg M_metrics_v1_Sum = {"Sum", 3, N_metrics_v1_Sum, F_metrics_v1_Sum, 3, 0, NULL};

static const pbfield F_metrics_v1_Histogram[] = {
    {"data_points", 1, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_metrics_v1_HistogramDataPoint},
    {"aggregation_temporality", 2, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_Histogram[3] = {-1, 0, 1};
static const pbmsg M_metrics_v1_Histogram = {"Histogram", 2, N_metrics_v1_Histogram, F_metrics_v1_Histogram, 2, 0, NULL};

static const pbfield F_metrics_v1_HistogramDataPoint[] = {
    {"start_time_unix_nano", 2, K_FIXED64, 0, 0, -1, NULL},
    {"time_unix_nano", 3, K_FIXED64, 0, 0, -1, NULL},
    {"count", 4, K_FIXED64, 0, 0, -1, NULL},
    {"sum", 5, K_FIXED64, 0, 0, -1, NULL},
    {"bucket_counts", 6, K_FIXED64, PF_REPEATED, 0, -1, NULL},
    {"explicit_bounds", 7, K_FIXED64, PF_REPEATED, 0, -1, NULL},
    {"exemplars", 8, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_Exemplar},
    {"attributes", 9, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"flags", 10, K_VARINT, 0, 0, -1, NULL},
    {"min", 11, K_FIXED64, 0, 0, -1, NULL},
    {"max", 12, K_FIXED64, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_HistogramDataPoint[13] = {-1, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const pbmsg M_metrics_v1_HistogramDataPoint = {"HistogramDataPoint", 12, N_metrics_v1_HistogramDataPoint, F_metrics_v1_HistogramDataPoint, 11, 0, NULL};

static const pbfield F_metrics_v1_ExponentialHistogram[] = {
    {"data_points", 1, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_metrics_v1_ExponentialHistogramDataPoint},
    {"aggregation_temporality", 2, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_ExponentialHistogram[3] = {-1, 0, 1};
static const pbmsg M_metrics_v1_ExponentialHistogram = {"ExponentialHistogram", 2, N_metrics_v1_ExponentialHistogram, F_metrics_v1_ExponentialHistogram, 2, 0, NULL};

static const pbfield F_metrics_v1_ExponentialHistogramDataPoint[] = {
    {"attributes", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"start_time_unix_nano", 2, K_FIXED64, 0, 0, -1, NULL},
    {"time_unix_nano", 3, K_FIXED64, 0, 0, -1, NULL},
    {"count", 4, K_FIXED64, 0, 0, -1, NULL},
    {"sum", 5, K_FIXED64, 0, 0, -1, NULL},
    {"scale", 6, K_VARINT, 0, 0, -1, NULL},
    {"zero_count", 7, K_FIXED64, 0, 0, -1, NULL},
    {"positive", 8, K_MESSAGE, 0, 0, -1, &M_metrics_v1_ExponentialHistogramDataPoint_Buckets},
    {"negative", 9, K_MESSAGE, 0, 0, -1, &M_metrics_v1_ExponentialHistogramDataPoint_Buckets},
    {"flags", 10, K_VARINT, 0, 0, -1, NULL},
    {"exemplars", 11, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_Exemplar},
    {"min", 12, K_FIXED64, 0, 0, -1, NULL},
    {"max", 13, K_FIXED64, 0, 0, -1, NULL},
    {"zero_threshold", 14, K_FIXED64, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_ExponentialHistogramDataPoint[15] = {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
static const pbmsg M_metrics_v1_ExponentialHistogramDataPoint = {"ExponentialHistogramDataPoint", 14, N_metrics_v1_ExponentialHistogramDataPoint, F_metrics_v1_ExponentialHistogramDataPoint, 14, 0, NULL};

static const pbfield F_metrics_v1_ExponentialHistogramDataPoint_Buckets[] = {
    {"offset", 1, K_VARINT, 0, 0, -1, NULL},
    {"bucket_counts", 2, K_VARINT, PF_REPEATED, 0, -1, NULL},
};
static const int8_t N_metrics_v1_ExponentialHistogramDataPoint_Buckets[3] = {-1, 0, 1};
static const pbmsg M_metrics_v1_ExponentialHistogramDataPoint_Buckets = {"Buckets", 2, N_metrics_v1_ExponentialHistogramDataPoint_Buckets, F_metrics_v1_ExponentialHistogramDataPoint_Buckets, 2, 0, NULL};

static const pbfield F_metrics_v1_Summary[] = {
    {"data_points", 1, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_metrics_v1_SummaryDataPoint},
};
static const int8_t N_metrics_v1_Summary[2] = {-1, 0};
static const pbmsg M_metrics_v1_Summary = {"Summary", 1, N_metrics_v1_Summary, F_metrics_v1_Summary, 1, 0, NULL};

static const pbfield F_metrics_v1_SummaryDataPoint[] = {
    {"start_time_unix_nano", 2, K_FIXED64, 0, 0, -1, NULL},
    {"time_unix_nano", 3, K_FIXED64, 0, 0, -1, NULL},
    {"count", 4, K_FIXED64, 0, 0, -1, NULL},
    {"sum", 5, K_FIXED64, 0, 0, -1, NULL},
    {"quantile_values", 6, K_MESSAGE, PF_REPEATED, 0, -1, &M_metrics_v1_SummaryDataPoint_ValueAtQuantile},
    {"attributes", 7, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"flags", 8, K_VARINT, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_SummaryDataPoint[9] = {-1, -1, 0, 1, 2, 3, 4, 5, 6};
static const pbmsg M_metrics_v1_SummaryDataPoint = {"SummaryDataPoint", 8, N_metrics_v1_SummaryDataPoint, F_metrics_v1_SummaryDataPoint, 7, 0, NULL};

static const pbfield F_metrics_v1_SummaryDataPoint_ValueAtQuantile[] = {
    {"quantile", 1, K_FIXED64, 0, 0, -1, NULL},
    {"value", 2, K_FIXED64, 0, 0, -1, NULL},
};
static const int8_t N_metrics_v1_SummaryDataPoint_ValueAtQuantile[3] = {-1, 0, 1};
static const pbmsg M_metrics_v1_SummaryDataPoint_ValueAtQuantile = {"ValueAtQuantile", 2, N_metrics_v1_SummaryDataPoint_ValueAtQuantile, F_metrics_v1_SummaryDataPoint_ValueAtQuantile, 2, 0, NULL};

static const pbfield F_collector_logs_v1_ExportLogsServiceRequest[] = {
    {"resource_logs", 1, K_MESSAGE, PF_REPEATED, 0, -1, &M_logs_v1_ResourceLogs},
};
static const int8_t N_collector_logs_v1_ExportLogsServiceRequest[2] = {-1, 0};
static const pbmsg M_collector_logs_v1_ExportLogsServiceRequest = {"ExportLogsServiceRequest", 1, N_collector_logs_v1_ExportLogsServiceRequest, F_collector_logs_v1_ExportLogsServiceRequest, 1, 0, NULL};

static const pbfield F_logs_v1_ResourceLogs[] = {
    {"resource", 1, K_MESSAGE, 0, 0, -1, &M_resource_v1_Resource},
    {"scope_logs", 2, K_MESSAGE, PF_REPEATED, 0, -1, &M_logs_v1_ScopeLogs},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_logs_v1_ResourceLogs[4] = {-1, 0, 1, 2};
static const pbmsg M_logs_v1_ResourceLogs = {"ResourceLogs", 3, N_logs_v1_ResourceLogs, F_logs_v1_ResourceLogs, 3, 0, NULL};

static const pbfield F_logs_v1_ScopeLogs[] = {
    {"scope", 1, K_MESSAGE, 0, 0, -1, &M_common_v1_InstrumentationScope},
    {"log_records", 2, K_MESSAGE, PF_REPEATED | PF_COUNTED, 0, -1, &M_logs_v1_LogRecord},
    {"schema_url", 3, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_logs_v1_ScopeLogs[4] = {-1, 0, 1, 2};
static const pbmsg M_logs_v1_ScopeLogs = {"ScopeLogs", 3, N_logs_v1_ScopeLogs, F_logs_v1_ScopeLogs, 3, 0, NULL};

static const pbfield F_logs_v1_LogRecord[] = {
    {"time_unix_nano", 1, K_FIXED64, 0, 0, -1, NULL},
    {"severity_number", 2, K_VARINT, 0, 0, -1, NULL},
    {"severity_text", 3, K_STRING, 0, 0, -1, NULL},
    {"body", 5, K_MESSAGE, 0, 0, -1, &M_common_v1_AnyValue},
    {"attributes", 6, K_MESSAGE, PF_REPEATED, 0, -1, &M_common_v1_KeyValue},
    {"dropped_attributes_count", 7, K_VARINT, 0, 0, -1, NULL},
    {"flags", 8, K_FIXED32, 0, 0, -1, NULL},
    {"trace_id", 9, K_BYTES, PF_ID_OPTIONAL, 16, 0, NULL},
    {"span_id", 10, K_BYTES, PF_ID_OPTIONAL, 8, 1, NULL},
    {"observed_time_unix_nano", 11, K_FIXED64, 0, 0, -1, NULL},
    {"event_name", 12, K_STRING, 0, 0, -1, NULL},
};
static const int8_t N_logs_v1_LogRecord[13] = {-1, 0, 1, 2, -1, 3, 4, 5, 6, 7, 8, 9, 10};
static const int8_t I_logs_v1_LogRecord[2] = {7, 8};
static const pbmsg M_logs_v1_LogRecord = {"LogRecord", 12, N_logs_v1_LogRecord, F_logs_v1_LogRecord, 11, 2, I_logs_v1_LogRecord};

#define ROOT_TRACES (&M_collector_trace_v1_ExportTraceServiceRequest)
#define ROOT_METRICS (&M_collector_metrics_v1_ExportMetricsServiceRequest)
#define ROOT_LOGS (&M_collector_logs_v1_ExportLogsServiceRequest)
