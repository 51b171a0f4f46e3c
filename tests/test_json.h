/* cJSON lookups for the fixture manifests: -1 / "" when the key is absent or
 * of another type. */
#ifndef DS_TEST_JSON_H
#define DS_TEST_JSON_H

#include <cjson/cJSON.h>

static inline int jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static inline const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

#endif
